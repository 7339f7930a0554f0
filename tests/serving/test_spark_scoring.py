"""Scoring on Spark (rrlfeh.serving.spark) gives what the in-process pyfunc gives: every star once,
the same [Fe/H], error and status, for data/raw (bad stars included), a user's epoch file and
`rrlfeh score --engine spark`; without pyspark, a one-line error saying how to get it.

Spark runs in local mode (local[2]) on the session's tiny registered project (pipeline_project);
the in-process reference is `mlflow.pyfunc.load_model(...).predict` on the same epochs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from spark_checks import ATOL, assert_same_stars, raw_with_bad_stars

from rrlfeh.serving.inputs import request_frame

from conftest import BIN, REPO, run, tracking


def test_engine_spark_without_pyspark_says_how_to_get_it(monkeypatch, capsys):
    """No pyspark (an import blocked through sys.modules): `rrlfeh score --engine spark` stops
    before touching the registry or any output, with one line naming `make setup-spark`."""
    from rrlfeh import cli
    from rrlfeh.serving.spark import SparkUnavailable, require_pyspark

    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(SparkUnavailable, match="make setup-spark"):
        require_pyspark()
    assert cli.main(["score", "--engine", "spark", "--params", str(REPO / "params.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rrlfeh score: error: --engine spark needs pyspark")
    assert "`make setup-spark`" in err and "\n" not in err


@pytest.fixture(scope="module")
def project(pipeline_project: Path):
    """The session's project, its MLflow store the current one for this module's tests."""
    with tracking(f"sqlite:///{pipeline_project / 'mlflow.db'}"):
        yield pipeline_project


@pytest.fixture(scope="module")
def champion(project):
    """(the champion's pinned URI, the champion loaded in this process)."""
    import mlflow

    from rrlfeh.serving.model_uri import resolve

    uri = resolve("models:/rrl-feh@champion").pinned
    return uri, mlflow.pyfunc.load_model(uri)


def settings(**kw):
    from rrlfeh.serving.spark import SparkSettings

    # odd sizes: 3 tasks, 37 stars a batch, so stars fall at arbitrary places of the cuts
    return SparkSettings(**{"master": "local[2]", "partitions": 3, "stars_per_batch": 37,
                            "log_level": "ERROR", **kw})


@pytest.mark.slow
def test_spark_scores_data_raw_as_the_in_process_pyfunc(project, champion, tmp_path):
    from rrlfeh.serving.spark import score_raw

    uri, model = champion
    raw = tmp_path / "raw"
    bad = raw_with_bad_stars(project, raw)
    epochs = pd.read_parquet(raw / "epochs.parquet")
    ref = model.predict(request_frame(epochs, pd.read_parquet(raw / "stars.parquet")))
    assert len(ref) == epochs["source_id"].nunique() >= 400
    status = ref.set_index("source_id")["status"]
    assert "too few" in status[11] and "unknown type 'RRd'" in status[44]
    assert status[22] != "ok" and status[33] == "ok"

    got = score_raw(raw, uri, settings())
    assert_same_stars(got, ref)
    assert (got["source_id"].diff().dropna() > 0).all()  # in star order, as the stage's chunks
    assert set(bad) <= set(got.loc[got["status"] != "ok", "source_id"]) | {33}


@pytest.mark.slow
def test_a_users_epoch_file_on_spark(project, champion, tmp_path, capsys):
    """A user's long-form parquet (no periods: the model derives them; a star of 3 epochs, stars
    not in id order) through `python -m rrlfeh.serving.spark`'s main: the answers of the
    pyfunc in this process, in input order; a file without mag stops in one line."""
    from rrlfeh.serving.spark import main

    uri, model = champion
    epochs = pd.read_parquet(project / "data/raw/epochs.parquet")
    ids = epochs["source_id"].drop_duplicates().to_numpy()[[7, 3, 250, 41, 120, 9]]
    frame = pd.concat([epochs[epochs["source_id"] == i] for i in ids])
    frame = frame[["source_id", "time", "mag", "flux", "flux_error", "rejected"]]
    frame = pd.concat([frame, frame[frame["source_id"] == ids[0]].head(3).assign(source_id=5)])
    # column names in any case (MLflow's schema check in front of the pyfunc would drop 'MAG')
    frame.rename(columns={"mag": "MAG"}).to_parquet(tmp_path / "mine.parquet")
    ref = model.predict(frame)
    assert "too few" in ref.set_index("source_id")["status"][5]

    params = str(project / "params.yaml")
    out = tmp_path / "feh.parquet"
    assert main([str(tmp_path / "mine.parquet"), "-o", str(out), "--model", uri,
                 "--params", params]) == 0
    got = pd.read_parquet(out)
    assert got["source_id"].tolist() == [*ids, 5]  # input order
    assert_same_stars(got, ref)

    frame.drop(columns=["mag"]).to_parquet(tmp_path / "no_mag.parquet")
    capsys.readouterr()
    assert main([str(tmp_path / "no_mag.parquet"), "-o", str(tmp_path / "x"), "--model", uri,
                 "--params", params]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"rrlfeh.serving.spark: error: {tmp_path / 'no_mag.parquet'}: "
                              "missing column(s) mag;")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_engine_spark_writes_the_in_process_catalogue(project, tmp_path):
    """`rrlfeh score --engine spark` in a copy of the project: the catalogue the in-process
    engine wrote there (the fixture's `dvc repro`), the same metrics, no Spark chatter."""
    work = tmp_path / "p"
    shutil.copytree(project, work, symlinks=True)
    shutil.rmtree(work / "data/cache/score")
    for name in ("catalogue.parquet", "catalogue.csv"):
        (work / "data/scored" / name).unlink()
    res = run([str(BIN / "rrlfeh"), "score", "--engine", "spark"], work)
    assert "score: on Spark (local[2]), models:/rrl-feh/" in res.stderr
    assert "Setting default log level" not in res.stderr
    assert [line for line in res.stderr.splitlines()
            if (" INFO " in line or " WARN " in line) and " rrlfeh." not in line] == []
    assert [p.name for p in work.glob("data/cache/score/*/chunk_*")] == ["chunk_spark.parquet"]
    for name, read in (("catalogue.parquet", pd.read_parquet), ("catalogue.csv", pd.read_csv)):
        got, ref = read(work / "data/scored" / name), read(project / "data/scored" / name)
        assert got["source_id"].tolist() == ref["source_id"].tolist()
        pd.testing.assert_frame_equal(got, ref, check_exact=False, atol=ATOL, rtol=0)
    import json

    got_m = json.loads((work / "reports/score.json").read_text())
    ref_m = json.loads((project / "reports/score.json").read_text())
    for key in ("n_stars", "n_ok", "n_in_domain", "status_counts", "model_version"):
        assert got_m[key] == ref_m[key], key
