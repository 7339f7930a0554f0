"""The stages through the CLI, as dvc.yaml runs them: acquire -> validate -> preprocess."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rrlfeh.cli import main

from conftest import REPO

DG22_FIXTURE = REPO / "tests" / "data" / "dg22"


def write_params(work: Path, **changes) -> Path:
    """The repository's params.yaml with a small synthetic sample and the given changes."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["acquire"]["synthetic"]["n_stars"] = 300
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def stage(work: Path, name: str, params: Path) -> int:
    return main([name, "--params", str(params), "--metrics", str(work / f"reports/{name}.json")])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("stages")
    params = write_params(work)
    for name in ("acquire", "validate", "preprocess"):
        assert stage(work, name, params) == 0, name
    return work


def test_validate_writes_kept_rejected_docs_and_counts(pipeline: Path):
    kept = pd.read_parquet(pipeline / "data/validated/stars.parquet")
    rejected = pd.read_parquet(pipeline / "data/validated/rejected.parquet")
    counts = yaml.safe_load((pipeline / "reports/validate.json").read_text())
    assert counts["n_in"] == 300 == len(kept) + len(rejected)
    assert set(kept["source_id"]).isdisjoint(rejected["source_id"])
    assert (kept["n_epochs_g"] >= 50).all() and (kept["feh_error"] <= 0.4).all()
    assert (kept["amplitude_g"] <= 1.4).all()
    assert (kept.loc[kept["type"] == "RRab", "phi31_g_error"] <= 0.10).all()
    assert rejected["reason"].str.len().gt(0).all() and (rejected["stage"] == "validate").all()
    assert (pipeline / "reports/gx/index.html").exists()


def test_preprocess_arrays_are_what_training_needs(pipeline: Path):
    kept = pd.read_parquet(pipeline / "data/validated/stars.parquet").set_index("source_id")
    rejected = pd.read_parquet(pipeline / "data/processed/rejected.parquet")
    total = 0
    for kind, n_points in (("RRab", 264), ("RRc", 265)):
        a = np.load(pipeline / f"data/processed/{kind}.npz")
        n = len(a["y"])
        total += n
        assert a["X"].shape == (n, n_points, 2) and n > 20
        # channel 0: standardised magnitude; channel 1: phase x period (the paper's eq. 4)
        assert np.allclose(a["X"][..., 0].mean(axis=1), 0, atol=1e-4)
        assert np.allclose(a["X"][..., 0].std(axis=1), 1, atol=1e-3)
        assert np.allclose(a["X"][..., 1], a["phase_grid"][None, :] * a["period"][:, None],
                           rtol=1e-5)
        assert np.allclose(a["y"], kept.loc[a["source_id"], "feh"], atol=1e-6)
        assert (kept.loc[a["source_id"], "type"] == kind).all()
        assert a["weights"].sum() == pytest.approx(n, rel=1e-4)
        assert np.bincount(a["strata"]).min() >= 5
    assert total + len(rejected) == len(kept)
    for fig in ("bailey", "curves", "feh_weights"):
        assert (pipeline / f"reports/figures/{fig}.png").stat().st_size > 10_000


def test_broken_schema_stops_validate_naming_the_column(pipeline: Path, tmp_path: Path, capsys):
    raw = tmp_path / "data/raw"
    shutil.copytree(pipeline / "data/raw", raw)
    stars = pd.read_parquet(raw / "stars.parquet")
    stars.loc[3, "period"] = -0.5
    stars.to_parquet(raw / "stars.parquet")
    params = write_params(tmp_path)
    assert stage(tmp_path, "validate", params) == 1
    err = capsys.readouterr().err
    assert "period" in err and str(stars.loc[3, "source_id"]) in err
    assert not (tmp_path / "data/validated/stars.parquet").exists()


def test_prefolded_curves_enter_at_preprocess(tmp_path: Path):
    params = write_params(tmp_path, **{
        "preprocess.source": "folded",
        "preprocess.folded.curves": str(DG22_FIXTURE / "lc_dev_g.tar.gz"),
        "preprocess.folded.labels": str(DG22_FIXTURE / "labels_dev.csv"),
        "preprocess.strata.min_per_bin": 1, "preprocess.curves.min_points": 8})
    assert stage(tmp_path, "preprocess", params) == 0
    a = np.load(tmp_path / "data/processed/RRab.npz")
    labels = pd.read_csv(DG22_FIXTURE / "labels_dev.csv")
    rejected = pd.read_parquet(tmp_path / "data/processed/rejected.parquet")
    assert len(a["y"]) + len(rejected) == labels["source_id_dr2"].isin(
        a["source_id"].tolist() + rejected["source_id"].tolist()).sum() > 0
    assert a["X"].shape[1:] == (264, 2)
    assert np.isnan(a["X"][..., 1]).all()  # no periods published for DG22: time channel unknown
    assert len(np.load(tmp_path / "data/processed/RRc.npz")["y"]) == 0


def test_gaia_source_offline_stops_fast_with_a_clear_message(tmp_path: Path, capsys):
    from rrlfeh.data import gaia

    try:
        gaia.probe_archive(timeout_s=5.0)
    except gaia.ArchiveUnreachable:
        pass
    else:
        pytest.skip("the Gaia archive is reachable from here")
    params = write_params(tmp_path, **{"acquire.source": "gaia", "acquire.gaia.labels": None})
    t0 = time.monotonic()
    assert stage(tmp_path, "acquire", params) == 1
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err
    assert "Gaia archive cannot be reached" in err and "gea.esac.esa.int" in err
    assert not (tmp_path / "data/raw/stars.parquet").exists()
