"""The stages through the CLI, as dvc.yaml runs them: acquire -> validate -> preprocess."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import gaussian_kde

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
        a = dict(np.load(pipeline / f"data/processed/{kind}.npz"))
        # the stars' own curves first, then their sparse copies (checked in test_sparse_training
        # and below); what follows is about the stars
        copies = a["copy"] > 0
        assert not copies[: int((~copies).sum())].any()
        assert set(a["source_id"][copies]) <= set(a["source_id"][~copies & ~a["is_test"]])
        assert (a["n_epochs"][copies] <= 45).all() and not a["is_test"][copies].any()
        for k in ("source_id", "y", "strata", "is_test", "weights"):
            copy_of = pd.Series(a[k][~copies], index=a["source_id"][~copies])
            if k == "weights":  # a star's copies share its weight
                per_star = pd.Series(a[k][copies]).groupby(a["source_id"][copies]).sum()
                assert np.allclose(per_star, copy_of.reindex(per_star.index), rtol=1e-5)
            else:
                assert (copy_of.reindex(a["source_id"][copies]).to_numpy() == a[k][copies]).all()
        a = {k: (v[~copies] if np.ndim(v) and len(v) == len(copies) else v) for k, v in a.items()}
        n = len(a["y"])
        total += n
        assert list(a["channels"]) == ["standardised_mag", "phase_x_period_d", "period_d",
                                       "phi31", "r21", "amplitude_mag", "phi31_error"]
        assert a["X"].shape == (n, n_points, 7) and n > 20
        # channel 0: standardised magnitude; channel 1: phase x period (the paper's eq. 4)
        assert np.allclose(a["X"][..., 0].mean(axis=1), 0, atol=1e-4)
        assert np.allclose(a["X"][..., 0].std(axis=1), 1, atol=1e-3)
        assert np.allclose(a["X"][..., 1], a["phase_grid"][None, :] * a["period"][:, None],
                           rtol=1e-5)
        # per-star channels, constant along the curve: period, phi31, R21, amplitude
        assert np.ptp(a["X"][..., 2:], axis=1).max() == 0
        assert np.allclose(a["X"][:, 0, 2], a["period"], rtol=1e-6)
        assert np.allclose(a["X"][:, 0, 5], a["amplitude"], rtol=1e-6)
        # φ31 and R21: the Fourier fit of the star's own epochs (the relations' inputs too),
        # close to the smooth curve's, and equal to an independent least-squares fit of the raw
        # epochs with the same number of harmonics wherever no epoch was clipped
        centre = 3.3  # network_input.PHI31_CENTRE; no star may sit near the cut at centre ± π
        assert np.array_equal(a["X"][:, 0, 3], a["star_phi31"].astype(np.float32))
        assert np.array_equal(a["X"][:, 0, 4], a["star_r21"].astype(np.float32))
        phi31, r21 = harmonic_fit_phi31_r21(a["X"][..., 0], a["phase_grid"])
        gap = np.angle(np.exp(1j * (a["X"][:, 0, 3] + centre - phi31)))
        assert np.median(np.abs(gap)) < 0.15
        assert np.abs(a["X"][:, 0, 3]).max() < np.pi - 0.5
        assert ((a["X"][:, 0, 6] > 0) & (a["X"][:, 0, 6] <= 1.0)).all()
        same = [raw_epochs_fit(pipeline, sid, kept.loc[sid], int(k)) for sid, k in
                zip(a["source_id"][:12], a["fourier_harmonics"][:12], strict=True)]
        match = [np.isclose(np.angle(np.exp(1j * (p - centre - x))), 0, atol=1e-5)
                 and np.isclose(r, xr, rtol=1e-5)
                 for (p, r), x, xr in zip(same, a["X"][:12, 0, 3], a["X"][:12, 0, 4],
                                          strict=True)]
        assert sum(match) >= 9, match
        assert np.allclose(a["y"], kept.loc[a["source_id"], "feh"], atol=1e-6)
        assert (kept.loc[a["source_id"], "type"] == kind).all()
        # the test split: 20 % stratified, outside the K-fold strata; the KDE of the weights is
        # fitted on the training stars alone and only evaluated at the test stars
        test = a["is_test"]
        assert abs(test.mean() - 0.2) < 0.03
        assert (a["strata"][test] == -1).all() and np.bincount(a["strata"][~test]).min() >= 5
        assert a["weights"][~test].sum() == pytest.approx((~test).sum(), rel=1e-4)
        inv = 1 / gaussian_kde(a["y"][~test].astype(float))(a["y"].astype(float))
        ratio = a["weights"] / inv
        capped = a["weights"] >= a["weights"][~test].min() * 50 * (1 - 1e-6)
        assert np.allclose(ratio[~capped], ratio[~capped][0], rtol=1e-4)
    assert total + len(rejected) == len(kept)
    for fig in ("bailey", "curves", "feh_weights"):
        assert (pipeline / f"reports/figures/{fig}.png").stat().st_size > 10_000


def raw_epochs_fit(project: Path, source_id: int, star: pd.Series, k: int) -> tuple[float, float]:
    """φ31 (cosine convention) and R21 of a weighted least-squares fit of `k` harmonics to the
    star's unflagged raw epochs at its period (independent of rrlfeh's Fourier code)."""
    import pyarrow.parquet as pq

    e = pq.read_table(project / "data/raw/epochs.parquet",
                      filters=[("source_id", "=", int(source_id))]).to_pandas()
    e = e[~e["rejected"] & np.isfinite(e["mag"]) & (e["flux"] > 0)]
    sigma = 1.0857 * e["flux_error"].to_numpy() / e["flux"].to_numpy()
    arg = 2 * np.pi * (e["time"].to_numpy() - star["epoch_max"]) / star["period"]
    design = np.column_stack([np.ones_like(arg)] + [f(j * arg) for j in range(1, k + 1)
                                                    for f in (np.cos, np.sin)])
    coef = np.linalg.lstsq(design / sigma[:, None], e["mag"].to_numpy() / sigma, rcond=None)[0]
    a, b = coef[1::2], coef[2::2]
    phase = np.arctan2(-b, a)
    return float(np.mod(phase[2] - 3 * phase[0], 2 * np.pi)), float(np.hypot(a[1], b[1])
                                                                     / np.hypot(a[0], b[0]))


def harmonic_fit_phi31_r21(curves: np.ndarray, phase: np.ndarray):
    """φ31 (cosine convention) and R21 by a least-squares fit of 3 harmonics (not an FFT)."""
    arg = 2 * np.pi * phase
    design = np.column_stack([np.ones_like(arg)] + [f(k * arg) for k in (1, 2, 3)
                                                    for f in (np.cos, np.sin)])
    c = np.linalg.lstsq(design, curves.T.astype(float), rcond=None)[0]
    # a cos(x) + b sin(x) = A cos(x + φ), φ = atan2(-b, a)
    phi = [np.arctan2(-c[2 * k], c[2 * k - 1]) for k in (1, 2, 3)]
    amp = [np.hypot(c[2 * k - 1], c[2 * k]) for k in (1, 2, 3)]
    return phi[2] - 3 * phi[0], amp[1] / amp[0]


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
        "preprocess.strata.min_per_bin": 1, "preprocess.curves.min_points": 8,
        "preprocess.channels": ["standardised_mag", "phase", "phi31", "r21", "amplitude_mag"]})
    assert stage(tmp_path, "preprocess", params) == 0
    a = np.load(tmp_path / "data/processed/RRab.npz")
    labels = pd.read_csv(DG22_FIXTURE / "labels_dev.csv")
    rejected = pd.read_parquet(tmp_path / "data/processed/rejected.parquet")
    own = a["copy"] == 0  # the stars' own curves; the rest are sparse copies of them
    assert own.sum() + len(rejected) == labels["source_id_dr2"].isin(
        a["source_id"][own].tolist() + rejected["source_id"].tolist()).sum() > 0
    # no periods published for DG22: the model of curves without periods sees the phase
    assert a["X"].shape[1:] == (264, 5) and np.isnan(a["period"]).all()
    assert np.allclose(a["X"][..., 1], a["phase_grid"][None, :])
    from rrlfeh.training.arrays import load_training_set

    data = load_training_set(tmp_path / "data/processed/RRab.npz", part="all")
    assert np.isfinite(data.X).all() and len(data) == len(a["y"])
    assert len(np.load(tmp_path / "data/processed/RRc.npz")["y"]) == 0


def test_gaia_source_offline_stops_fast_with_a_clear_message(tmp_path: Path, capsys):
    from rrlfeh.data import gaia, gaia_client

    try:
        gaia_client.probe_archive(timeout_s=5.0)
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
