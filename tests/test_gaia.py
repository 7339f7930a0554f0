"""Gaia archive acquisition at the astroquery boundary: a fake client answering like 0.4.11."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import votable
from astropy.table import Table

from rrlfeh.data import gaia, gaia_client, layouts, schema
from rrlfeh.data import labels as label_files

GAIA = Path(__file__).parent / "data" / "gaia"
FIXTURE_IDS = [4000000000000000001, 4000000000000000002, 4000000000000000003]
NO_PHOTOMETRY_ID = 4000000000000000004  # in the query answer, absent from the DataLink answer
QUERY_IDS = FIXTURE_IDS + [NO_PHOTOMETRY_ID]
TEMPLATE_ID = FIXTURE_IDS[0]


class FakeJob:
    """A finished TAP job, as returned by GaiaClass.launch_job_async."""

    def __init__(self, table: Table):
        self._table = table

    def get_results(self) -> Table:
        return self._table


class FakeGaia:
    """Answers `load_data` and `launch_job_async` like astroquery 0.4.11's GaiaClass.

    Stars with a fixture file get it; other ids get the template star's file with the id
    replaced (so batching tests can ask for many); ids in `absent` (by default the query's
    fourth star) get nothing, as when the archive has no light curve. Call numbers
    (1-based) in `fail_calls` raise a ConnectionResetError, as a dropped connection would.
    """

    def __init__(self, workdir: Path, *, absent: frozenset[int] = frozenset({NO_PHOTOMETRY_ID}),
                 fail_calls: frozenset[int] = frozenset()):
        self.workdir = workdir  # where the downloaded files are unpacked, as astroquery does
        self.workdir.mkdir(exist_ok=True)
        self.absent = set(absent)
        self.fail_calls = set(fail_calls)
        self.calls: list[list[int]] = []
        self.queries: list[str] = []
        self.template = (GAIA / f"EPOCH_PHOTOMETRY-{TEMPLATE_ID}.xml").read_text()

    def load_data(self, ids, *, data_release=None, data_structure="INDIVIDUAL",
                  retrieval_type="ALL", linking_parameter="SOURCE_ID", valid_data=False,
                  band=None, avoid_datatype_check=False, format="votable", dump_to_file=False,
                  overwrite_output_file=False, verbose=False, output_file=None):
        self.calls.append([int(i) for i in ids])
        assert (retrieval_type, data_structure, format) == ("EPOCH_PHOTOMETRY", "INDIVIDUAL",
                                                           "votable")
        assert valid_data is False and band is None and data_release == "Gaia DR3"
        if len(ids) > gaia.MAX_IDS_PER_CALL:
            raise OSError("Error 500: too many ids")  # requests.HTTPError is an OSError
        if len(self.calls) in self.fail_calls:
            raise ConnectionResetError(104, "Connection reset by peer")
        answer = {}
        for sid in ids:
            if int(sid) in self.absent:
                continue
            path = GAIA / f"EPOCH_PHOTOMETRY-{sid}.xml"
            text = (path.read_text() if path.exists()
                    else self.template.replace(str(TEMPLATE_ID), str(sid)))
            tmp = self.workdir / f"{sid}.xml"
            tmp.write_text(text)
            answer[f"EPOCH_PHOTOMETRY-Gaia DR3 {sid}.xml"] = list(
                votable.parse(str(tmp)).iter_tables())
        return answer

    def launch_job_async(self, query, **kwargs):
        self.queries.append(query)
        return FakeJob(Table.read(GAIA / "vari_rrlyrae_query.xml", format="votable"))


@pytest.fixture
def fake(tmp_path):
    def make(**kwargs) -> FakeGaia:
        return FakeGaia(tmp_path / "answers", **kwargs)
    return make


@pytest.fixture
def no_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(gaia_client, "_sleep", slept.append)
    return slept


def many_ids(n: int) -> list[int]:
    return [4100000000000000000 + 7 * k for k in range(n)][::-1]  # unsorted on purpose


# ---------------------------------------------------------------- stars

def test_query_rrlyrae_maps_columns(fake):
    client = fake()
    stars = gaia.query_rrlyrae(client=client)
    assert list(stars.columns) == list(schema.STARS)
    assert stars["source_id"].tolist() == QUERY_IDS
    assert stars["type"].tolist() == ["RRab", "RRab", "RRc", "RRc"]
    assert stars["period"].tolist() == [0.5612345, 0.6123456, 0.3312345, 0.2876543]
    first = stars.iloc[0]
    assert (first["epoch_max"], first["amplitude_g"], first["mean_mag_g"], first["n_epochs_g"],
            first["phi31_g"], first["r21_g"], first["ra"]) == (1705.0213, 0.98, 15.71, 3, 2.0345,
                                                                0.4711, 271.2345)
    assert not stars[list(schema.DERIVED_FLAGS)].any().any()
    query = client.queries[0]
    assert "gaiadr3.vari_rrlyrae" in query and "gaiadr3.gaia_source" in query
    assert "best_classification IN ('RRab', 'RRc')" in query and "ORDER BY v.source_id" in query
    assert "TOP" not in query
    gaia.query_rrlyrae(client=client, max_stars=2)
    assert "SELECT TOP 2 " in client.queries[1]


def test_stars_reject_rows_naming_them():
    df = Table.read(GAIA / "vari_rrlyrae_query.xml").to_pandas()
    df = df.rename(columns={"source_id": "SOURCE_ID"})  # the archive may upper-case it
    df["num_clean_epochs_g"] = df["num_clean_epochs_g"].astype("Int64")
    df.loc[1, "num_clean_epochs_g"] = pd.NA
    df.loc[2, "best_classification"] = "RRd"
    with pytest.warns(gaia.GaiaDataWarning) as record:
        stars = gaia.stars_from_archive(df, phi31_shift_rad=np.pi)
    text = " ".join(str(w.message) for w in record)
    assert "4000000000000000002" in text and "4000000000000000003" in text
    assert stars["source_id"].tolist() == [QUERY_IDS[0], QUERY_IDS[3]]
    assert stars["phi31_g"].iloc[0] == pytest.approx(2.0345 + np.pi)
    assert stars["phi31_g"].iloc[1] == pytest.approx(4.0100 + np.pi - 2 * np.pi)
    rejects = gaia.archive_rejects(df)
    assert rejects["source_id"].tolist() == QUERY_IDS[1:3]
    assert rejects["reason"].tolist() == ["num_clean_epochs_g is null",
                                          "best_classification is not RRab or RRc"]


def test_max_stars_must_be_positive(fake):
    with pytest.raises(ValueError, match="max_stars"):
        gaia.query_rrlyrae(client=fake(), max_stars=0)


# ---------------------------------------------------------------- labels

def test_read_labels_aliases_and_formats(tmp_path):
    table = pd.DataFrame({"Source": [3, 1, 2], "[Fe/H]": [-1.5, -0.9, -2.1],
                          "e_[Fe/H]": [0.2, 0.3, 0.25]})
    table.to_csv(tmp_path / "m25.csv", index=False)
    labels = label_files.read_labels(tmp_path / "m25.csv")
    assert list(labels.columns) == list(schema.LABELS)
    assert labels["feh_error"].tolist() == [0.2, 0.3, 0.25]
    other = pd.DataFrame({"source_id": [5, 6], "FeH": [-1.0, -1.2], "feh_err": [0.1, 0.2]})
    other.to_parquet(tmp_path / "m25.parquet")
    Table.from_pandas(other).write(tmp_path / "m25.fits")
    Table.from_pandas(other).write(tmp_path / "m25.vot", format="votable")
    for name in ("m25.parquet", "m25.fits", "m25.vot"):
        got = label_files.read_labels(tmp_path / name)
        assert got["source_id"].tolist() == [5, 6] and got["feh_error"].tolist() == [0.1, 0.2]


def test_read_labels_errors(tmp_path):
    pd.DataFrame({"source_id": [1], "feh": [-1.0], "FeH": [-1.1]}).to_csv(tmp_path / "a.csv")
    with pytest.raises(schema.SchemaError, match="several columns"):
        label_files.read_labels(tmp_path / "a.csv")
    pd.DataFrame({"source_id_dr2": [1], "feh": [-1.0]}).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(schema.SchemaError, match="no 'source_id' column"):
        label_files.read_labels(tmp_path / "b.csv")
    pd.DataFrame({"source_id": [1, 2, 3], "feh": [-1.0, None, -1.2]}).to_csv(tmp_path / "c.csv",
                                                                             index=False)
    with pytest.warns(label_files.LabelWarning, match=r"source_id \[2\]"):
        assert label_files.read_labels(tmp_path / "c.csv")["source_id"].tolist() == [1, 3]
    pd.DataFrame({"source_id": [1, 1], "feh": [-1.0, -1.1]}).to_csv(tmp_path / "d.csv")
    with pytest.raises(schema.SchemaError, match="repeated"):
        label_files.read_labels(tmp_path / "d.csv")


@pytest.mark.realdata
def test_read_shared_labels(shared_data):
    labels = label_files.read_labels(shared_data / "gaia_dr3" / "labels_dev.csv")
    assert len(labels) == 568 and labels["feh_error"].isna().all()
    assert labels["feh"].between(-4, 1).all()


# ---------------------------------------------------------------- epochs

def test_plan_batches_sorted_deterministic_bounded():
    ids = many_ids(23)
    plan = gaia.plan_batches(ids, 5)
    assert [len(b) for b in plan] == [5, 5, 5, 5, 3]
    assert np.concatenate(plan).tolist() == sorted(ids)
    assert [b.tolist() for b in gaia.plan_batches(ids[::-1] + ids[:3], 5)] == \
        [b.tolist() for b in plan]
    with pytest.raises(ValueError, match="5000"):
        gaia.plan_batches(ids, 5001)


def test_fetch_matches_the_fixture_files(fake, tmp_path):
    with pytest.warns(gaia.MissingStarsWarning, match="4000000000000000004"):
        epochs = gaia.fetch_epoch_photometry(QUERY_IDS, tmp_path / "cache", client=fake())
    direct = layouts.to_epochs(pd.concat(
        [layouts.read_table(GAIA / f"EPOCH_PHOTOMETRY-{i}.xml") for i in FIXTURE_IDS]))
    pd.testing.assert_frame_equal(epochs, direct)
    missing = pd.read_csv(tmp_path / "cache" / gaia.MISSING_FILE)
    assert missing["source_id"].tolist() == [4000000000000000004]
    assert missing["reason"].str.contains("absent").all()


def test_batches_never_exceed_batch_size(fake, tmp_path):
    client = fake()
    ids = many_ids(17)
    epochs = gaia.fetch_epoch_photometry(ids, tmp_path, batch_size=4, client=client)
    assert [len(c) for c in client.calls] == [4, 4, 4, 4, 1]
    assert sum(client.calls, []) == sorted(ids)
    assert epochs["source_id"].nunique() == 17 and len(epochs) == 17 * 4
    assert len(list(tmp_path.glob(f"{gaia.BATCH_PREFIX}-*.parquet"))) == 5
    assert not list(tmp_path.glob(".*.tmp"))


def test_failure_half_way_then_resume_fetches_only_the_rest(fake, tmp_path, no_sleep):
    ids = many_ids(22)
    clean = gaia.fetch_epoch_photometry(ids, tmp_path / "clean", batch_size=5, client=fake())

    broken = fake(fail_calls={3, 4})  # batch 3 fails, and so does its one retry
    with pytest.raises(gaia.BatchFailed, match="batch 3/5"):
        gaia.fetch_epoch_photometry(ids, tmp_path / "run", batch_size=5, retries=1,
                                    backoff_s=0.001, client=broken)
    assert len(broken.calls) == 4
    assert len(list((tmp_path / "run").glob(f"{gaia.BATCH_PREFIX}-*.parquet"))) == 2

    healthy = fake()
    resumed = gaia.fetch_epoch_photometry(ids, tmp_path / "run", batch_size=5, client=healthy)
    plan = gaia.plan_batches(ids, 5)
    assert healthy.calls == [b.tolist() for b in plan[2:]]
    pd.testing.assert_frame_equal(resumed, clean)

    idle = fake(fail_calls=set(range(1, 100)))
    again = gaia.fetch_epoch_photometry(ids, tmp_path / "run", batch_size=5, client=idle)
    assert idle.calls == []
    pd.testing.assert_frame_equal(again, clean)


def test_retries_with_exponential_backoff(fake, tmp_path, no_sleep):
    client = fake(fail_calls={1, 2, 3})
    epochs = gaia.fetch_epoch_photometry(FIXTURE_IDS, tmp_path, retries=4, backoff_s=0.5,
                                         client=client)
    assert no_sleep == [0.5, 1.0, 2.0]
    assert len(client.calls) == 4 and len(epochs) == 10

    hopeless = fake(fail_calls=set(range(1, 100)))
    with pytest.raises(gaia.BatchFailed, match="after 3 attempts") as err:
        gaia.fetch_epoch_photometry(FIXTURE_IDS, tmp_path / "b", retries=2, backoff_s=0.5,
                                    client=hopeless)
    assert isinstance(err.value.__cause__, ConnectionResetError)
    assert len(hopeless.calls) == 3
    assert not list((tmp_path / "b").glob("*.parquet"))


def test_real_backoff_sleeps(fake, tmp_path):
    start = time.monotonic()
    gaia.fetch_epoch_photometry(FIXTURE_IDS, tmp_path, retries=2, backoff_s=0.05,
                                client=fake(fail_calls={1, 2}))
    assert time.monotonic() - start >= 0.05 + 0.1


def test_acquire_from_gaia_and_rerun_from_cache(fake, tmp_path):
    labels_file = tmp_path / "labels.csv"
    pd.DataFrame({"source_id": FIXTURE_IDS[:2], "FeH": [-1.4, -1.7],
                  "e_FeH": [0.2, 0.3]}).to_csv(labels_file, index=False)
    with pytest.warns(gaia.MissingStarsWarning):
        stars, epochs, labels, rejected = gaia.acquire_from_gaia(tmp_path / "cache",
                                                                 labels_file, client=fake())
    # the star without photometry is set aside with its reason, not kept and not lost
    assert stars["source_id"].tolist() == FIXTURE_IDS
    assert rejected["source_id"].tolist() == [NO_PHOTOMETRY_ID]
    assert (rejected["reason"] == gaia.MISSING_REASON).all()
    assert set(epochs["source_id"]) == set(FIXTURE_IDS)
    assert labels["feh"].tolist() == [-1.4, -1.7]
    for table, spec in ((stars, schema.STARS), (epochs, schema.EPOCHS), (labels, schema.LABELS)):
        assert table.dtypes.astype(str).to_dict() == spec

    # a rerun needs neither the archive nor a client: the probe is never reached
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gaia.MissingStarsWarning)
        again = gaia.acquire_from_gaia(tmp_path / "cache", labels_file)
    for old, new in zip((stars, epochs, labels, rejected), again, strict=True):
        pd.testing.assert_frame_equal(old, new)


# ---------------------------------------------------------------- offline

def _skip_if_online() -> float:
    """Run the real probe; skip when the archive answers (these tests are for offline hosts)."""
    start = time.monotonic()
    try:
        gaia_client.probe_archive(timeout_s=5.0)
    except gaia.ArchiveUnreachable:
        return time.monotonic() - start
    pytest.skip("the Gaia archive is reachable from here; offline behaviour not testable")


def test_real_probe_fails_fast_offline():
    start = time.monotonic()
    try:
        gaia_client.probe_archive(timeout_s=5.0)
    except gaia.ArchiveUnreachable as err:
        assert "gea.esac.esa.int:443" in str(err) and "cannot be reached" in str(err)
        assert time.monotonic() - start < 15
        return
    pytest.skip("the Gaia archive is reachable from here; offline behaviour not testable")


def test_probe_of_wrong_host_fails_within_its_timeout():
    # 10.255.255.1 is unroutable on the open internet (connect times out) and, behind a gateway
    # that accepts any connection, fails the TLS host check; either way, within the timeout.
    start = time.monotonic()
    with pytest.raises(gaia.ArchiveUnreachable, match="10.255.255.1"):
        gaia_client.probe_archive("10.255.255.1", 443, timeout_s=2.0)
    assert time.monotonic() - start < 4


def test_fetch_and_acquire_offline_fail_fast_without_astroquery(tmp_path):
    _skip_if_online()
    had_astroquery_gaia = "astroquery.gaia" in sys.modules
    for call in (lambda: gaia.fetch_epoch_photometry(FIXTURE_IDS, tmp_path / "a"),
                 lambda: gaia.acquire_from_gaia(tmp_path / "b", None, max_stars=5)):
        start = time.monotonic()
        with pytest.raises(gaia.ArchiveUnreachable, match="cannot be reached"):
            call()
        assert time.monotonic() - start < 15
    if not had_astroquery_gaia:
        assert "astroquery.gaia" not in sys.modules


def test_importing_the_module_does_not_import_astroquery_gaia():
    code = ("import sys, rrlfeh.data.gaia, rrlfeh.data.layouts; "
            "sys.exit('astroquery.gaia' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_fake_client_has_astroquery_signatures():
    """The fake's methods take exactly astroquery 0.4.11's keywords (read from its source: importing
    astroquery.gaia would contact the archive)."""
    import ast
    import importlib.util
    import inspect

    spec = importlib.util.find_spec("astroquery.utils")  # a sibling package; safe to locate
    core = Path(spec.origin).parents[1] / "gaia" / "core.py"
    tree = ast.parse(core.read_text())
    real = {node.name: [a.arg for a in node.args.args + node.args.kwonlyargs]
            for cls in tree.body if isinstance(cls, ast.ClassDef) and cls.name == "GaiaClass"
            for node in cls.body if isinstance(node, ast.FunctionDef)}
    assert list(inspect.signature(FakeGaia.load_data).parameters) == real["load_data"]
    assert "query" in real["launch_job_async"]
