"""Stage `acquire`: the three sources write the same three tables.

The synthetic sample is served three ways — generated directly, as local files in the archive's
INDIVIDUAL layout with a vari_rrlyrae-named stars table, and through a fake astroquery client
answering in the archive's own VOTable formats — and every way must give identical tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import votable
from astropy.table import Table

from rrlfeh.config import AcquireParams, FilesSource, GaiaSource
from rrlfeh.data import schema
from rrlfeh.data.synthetic import generate
from rrlfeh.stages import acquire

N_STARS = 40


@pytest.fixture(scope="module")
def synthetic():
    return generate(N_STARS, seed=7)


def individual_layout(epochs: pd.DataFrame) -> pd.DataFrame:
    """Canonical epochs written back as the DataLink INDIVIDUAL layout, with BP rows beside."""
    g = pd.DataFrame({
        "solution_id": np.int64(375316653866487564), "source_id": epochs["source_id"],
        "transit_id": epochs["transit_id"], "band": "G", "time": epochs["time"],
        "mag": epochs["mag"], "flux": epochs["flux"], "flux_error": epochs["flux_error"],
        "flux_over_error": epochs["flux"] / epochs["flux_error"],
        "rejected_by_photometry": epochs["mag"].isna(),
        "rejected_by_variability": epochs["rejected"] & epochs["mag"].notna(),
        "other_flags": np.int64(0)})
    bp = g.assign(band="BP", mag=g["mag"] + 0.3, rejected_by_variability=False)
    return pd.concat([g, bp], ignore_index=True)


def vari_rrlyrae(stars: pd.DataFrame) -> pd.DataFrame:
    """Our stars table in gaiadr3.vari_rrlyrae's column names (pf for RRab, p1_o for RRc)."""
    rrab = stars["type"] == "RRab"
    return pd.DataFrame({
        "source_id": stars["source_id"], "best_classification": stars["type"],
        "pf": stars["period"].where(rrab), "p1_o": stars["period"].where(~rrab),
        "epoch_g": stars["epoch_max"], "peak_to_peak_g": stars["amplitude_g"],
        "int_average_g": stars["mean_mag_g"], "num_clean_epochs_g": stars["n_epochs_g"],
        "phi31_g": stars["phi31_g"], "phi31_g_error": stars["phi31_g_error"],
        "r21_g": stars["r21_g"], "ra": stars["ra"], "dec": stars["dec"]})


class ArchiveOfSynthetic:
    """A Gaia archive stand-in serving the synthetic sample like astroquery 0.4.11's GaiaClass."""

    def __init__(self, synthetic, workdir: Path):
        self.stars = vari_rrlyrae(synthetic.stars)
        self.epochs = individual_layout(synthetic.epochs)
        self.workdir = workdir
        self.calls = 0

    def launch_job_async(self, query, **kwargs):
        class Job:
            def get_results(job):
                return Table.from_pandas(self.stars)
        return Job()

    def load_data(self, ids, *, retrieval_type, data_structure, format, valid_data, **kwargs):
        assert (retrieval_type, data_structure, format, valid_data) == (
            "EPOCH_PHOTOMETRY", "INDIVIDUAL", "votable", False)
        self.calls += 1
        answer = {}
        for sid in ids:
            rows = self.epochs[self.epochs["source_id"] == int(sid)]
            path = self.workdir / f"{sid}.xml"
            votable.from_table(Table.from_pandas(rows)).to_xml(str(path))
            answer[f"EPOCH_PHOTOMETRY-Gaia DR3 {sid}.xml"] = list(
                votable.parse(str(path)).iter_tables())
        return answer


def params(source: str, tmp_path: Path, **kw) -> AcquireParams:
    return AcquireParams(source=source, out_dir=tmp_path / "raw", **kw)


def canonical(tables, *, truth: bool = True) -> dict[str, pd.DataFrame]:
    """The tables sorted by their keys; truth=False: feh_true NaN, as a real source gives it."""
    keys = {"stars": ["source_id"], "epochs": ["source_id", "transit_id"],
            "labels": ["source_id"]}
    out = {name: getattr(tables, name).sort_values(k).reset_index(drop=True)
           for name, k in keys.items()}
    if not truth:
        out["stars"]["feh_true"] = np.nan
    return out


@pytest.fixture(scope="module")
def from_synthetic(synthetic):
    return acquire.from_synthetic({"n_stars": N_STARS, "seed": 7})


def test_synthetic_source_is_the_generator_conformed(synthetic, from_synthetic):
    for name, table in (("stars", schema.STARS), ("epochs", schema.EPOCHS),
                        ("labels", schema.LABELS)):
        got = getattr(from_synthetic, name)
        assert list(got.columns) == list(table)
        assert len(got) == len(getattr(synthetic, name))
    assert from_synthetic.rejected.empty


def test_files_source_gives_the_same_tables(synthetic, from_synthetic, tmp_path):
    individual_layout(synthetic.epochs).to_parquet(tmp_path / "epochs.parquet")
    vari_rrlyrae(synthetic.stars).to_csv(tmp_path / "vari_rrlyrae.csv", index=False)
    synthetic.labels.to_csv(tmp_path / "labels.csv", index=False)
    src = FilesSource(epochs=tmp_path / "epochs.parquet", labels=tmp_path / "labels.csv",
                      stars=tmp_path / "vari_rrlyrae.csv")
    got = acquire.collect(params("files", tmp_path, files=src))
    want = canonical(from_synthetic, truth=False)
    for name, table in canonical(got).items():
        pd.testing.assert_frame_equal(table, want[name], check_exact=False, rtol=1e-9,
                                      obj=f"files source, {name}")


def test_gaia_source_gives_the_same_tables(synthetic, from_synthetic, tmp_path):
    synthetic.labels.to_csv(tmp_path / "labels.csv", index=False)
    g = GaiaSource(labels=tmp_path / "labels.csv", cache_dir=tmp_path / "cache", max_stars=None,
                   batch_size=15, retries=0, backoff_s=0.0, timeout_s=5.0,
                   archive_url="http://127.0.0.1:9/", reask=0)  # the client is injected
    archive = ArchiveOfSynthetic(synthetic, tmp_path / "downloads")
    archive.workdir.mkdir()
    got = acquire.collect(params("gaia", tmp_path, gaia=g), client=archive)
    assert archive.calls == int(np.ceil(N_STARS / 15))
    want = canonical(from_synthetic, truth=False)
    for name, table in canonical(got).items():
        pd.testing.assert_frame_equal(table, want[name], check_exact=False, rtol=1e-9,
                                      obj=f"gaia source, {name}")


def test_files_source_derives_what_is_missing(synthetic, tmp_path):
    """Without a stars table, period, epoch, type, amplitude and phi31 come from the curves."""
    individual_layout(synthetic.epochs).to_parquet(tmp_path / "epochs.parquet")
    src = FilesSource(epochs=tmp_path / "epochs.parquet", labels=None)
    got = acquire.collect(params("files", tmp_path, files=src, derive={"n_jobs": 1}))
    stars = got.stars.merge(synthetic.truth[["source_id", "period", "type"]], on="source_id",
                            suffixes=("", "_true"))
    assert len(stars) + len(got.rejected) == N_STARS
    flags = [f for f in schema.DERIVED_FLAGS if f != "phi31_derived"]
    assert stars[flags].all().all()
    # phi31 needs three harmonics: a star too sparse for them is flagged only where it got one
    assert (stars["phi31_derived"] == stars["phi31_g"].notna()).all()
    assert stars["phi31_derived"].mean() > 0.8
    close = np.abs(stars["period"] / stars["period_true"] - 1) < 1e-3
    assert close.mean() >= 0.9, stars.loc[~close, ["source_id", "period", "period_true"]]
    assert (stars["type"] == stars["type_true"])[close].mean() >= 0.9
    assert got.rejected["reason"].str.len().gt(0).all()


def test_a_catalogue_period_is_kept_and_fitted_at(synthetic, tmp_path):
    """A stars table with the period but no epoch of maximum, type or φ31 (Gaia publishes no
    φ31 for about half its RR Lyrae): those are fitted at the catalogue's period, which is kept
    as given, and no star the catalogue has a period for is lost to a period search."""
    individual_layout(synthetic.epochs).to_parquet(tmp_path / "epochs.parquet")
    table = vari_rrlyrae(synthetic.stars).assign(epoch_g=np.nan, phi31_g=np.nan,
                                                 phi31_g_error=np.nan, r21_g=np.nan,
                                                 best_classification=None)
    table.to_csv(tmp_path / "vari_rrlyrae.csv", index=False)
    src = FilesSource(epochs=tmp_path / "epochs.parquet", labels=None,
                      stars=tmp_path / "vari_rrlyrae.csv")
    got = acquire.collect(params("files", tmp_path, files=src, derive={"n_jobs": 1}))
    stars = got.stars.merge(synthetic.stars[["source_id", "period", "epoch_max", "type"]],
                            on="source_id", suffixes=("", "_cat"))
    enough = synthetic.stars.loc[synthetic.stars["n_epochs_g"] >= 12, "source_id"]
    assert set(enough) <= set(stars["source_id"]), got.rejected
    assert np.array_equal(stars["period"], stars["period_cat"])
    assert not stars["period_derived"].any() and stars["epoch_derived"].all()
    offset = ((stars["epoch_max"] - stars["epoch_max_cat"]) / stars["period"] + 0.5) % 1 - 0.5
    assert (offset.abs() < 0.05).mean() >= 0.9, offset.abs().sort_values().tail()
    assert (stars["type"] == stars["type_cat"]).mean() >= 0.9


def test_stage_writes_tables_and_metrics(tmp_path):
    p = AcquireParams(source="synthetic", out_dir=tmp_path / "raw",
                      synthetic={"n_stars": 25, "seed": 3})
    metrics = acquire.run(p, tmp_path / "acquire.json")
    for name in acquire.OUTPUTS:
        assert (tmp_path / "raw" / f"{name}.parquet").exists()
    stars = pd.read_parquet(tmp_path / "raw" / "stars.parquet")
    assert metrics["n_stars"] == len(stars) == 25
    assert sum(metrics["n_stars_by_type"].values()) == 25
    assert (tmp_path / "acquire.json").read_text().count("n_epoch_rows") == 1
