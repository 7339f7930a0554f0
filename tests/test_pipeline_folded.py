"""`dvc repro` on pre-folded curves without periods (the DG22 case): a model of the curve's
shape alone (channels magnitude and phase, per-star φ31, R21, amplitude) is trained, registered
and scores every curve of the file, labelled or not; the report compares it star by star with a
peer's out-of-fold predictions. The folded curves are made here from synthetic RRab stars, in
the DG22 file format (lc_dev_g/<id>_bin.dat: phase, G mag)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fourier_check import fourier_values, relation_at

from conftest import BUILDS, background_build, clone_project, smallest_budget

N_LABELLED, N_UNLABELLED = 180, 40


def write_folded_set(folder: Path) -> tuple[list[int], pd.DataFrame]:
    """DG22-format curves of synthetic RRab stars, labels for the first N_LABELLED, and a
    'peer' whose out-of-fold predictions are the labels plus 0.2 dex of noise."""
    from rrlfeh.data.synthetic import generate

    syn = generate(600, seed=7, frac_rrc=0.0)
    stars = syn.stars[syn.stars["type"] == "RRab"].head(N_LABELLED + N_UNLABELLED)
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    with tarfile.open(folder / "lc_dev_g.tar.gz", "w:gz") as tar:
        for _, s in stars.iterrows():
            e = syn.epochs[(syn.epochs["source_id"] == s["source_id"]) & ~syn.epochs["rejected"]
                           & np.isfinite(syn.epochs["mag"])]
            phase = np.mod((e["time"] - s["epoch_max"]) / s["period"], 1.0)
            text = "".join(f"{p:.6f} {m:.4f}\n" for p, m in zip(phase, e["mag"], strict=True))
            info = tarfile.TarInfo(f"lc_dev_g/{int(s['source_id'])}_bin.dat")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
            ids.append(int(s["source_id"]))
    labels = syn.labels.set_index("source_id").loc[ids[:N_LABELLED], ["feh"]].reset_index()
    labels = labels.rename(columns={"source_id": "source_id_dr2"})
    labels.to_csv(folder / "labels_dev.csv", index=False)
    rng = np.random.default_rng(0)
    pd.DataFrame({"source_id_dr2": labels["source_id_dr2"], "fold": 1,
                  "feh_pred": labels["feh"] + rng.normal(0, 0.2, len(labels))}).to_csv(
        folder / "peer_oof.csv", index=False)
    return ids, labels


@background_build("folded_project")
def _folded_project(work: Path) -> list[str]:
    def folded(params: dict) -> None:
        params["acquire"]["synthetic"]["n_stars"] = 60  # acquire/validate still run: tiny
        smallest_budget(params)
        params["preprocess"].update(source="folded", channels=[
            "standardised_mag", "phase", "phi31", "r21", "amplitude_mag"])
        params["preprocess"]["folded"].update(curves="folded/lc_dev_g.tar.gz",
                                              labels="folded/labels_dev.csv")
        # the sparse stage cuts the folded test curves (synthetic: 40-70 points a star)
        params["sparse"].update(min_epochs=40, n_epochs=[15, 30])
        params["register"]["model_name"] = "rrl-feh-folded"
        params["score"]["model_uri"] = "models:/rrl-feh-folded@champion"
        params["report"].update(name="folded", scored_csv="data/scored/folded.csv",
                                peer_oof="folded/peer_oof.csv")

    ids, _ = write_folded_set(work / "folded")
    (work / "folded" / "ids.json").write_text(json.dumps(ids))
    clone_project(work, folded)
    return ["dvc", "repro"]


@pytest.fixture(scope="module")
def folded_project() -> tuple[Path, list[int], pd.DataFrame]:
    """The folded project after its `dvc repro` (started in the background: conftest), the
    curves' ids and the labels."""
    work = BUILDS["folded_project"].wait()
    ids = json.loads((work / "folded" / "ids.json").read_text())
    return work, ids, pd.read_csv(work / "folded" / "labels_dev.csv")


def test_every_curve_is_scored_once_without_a_period(folded_project):
    work, ids, _ = folded_project
    short = pd.read_csv(work / "data/scored/folded.csv")
    assert sorted(short["source_id"].tolist()) == sorted(ids)  # labelled and unlabelled
    assert (short["status"] == "ok").mean() > 0.9
    settings = json.loads(next((work / "data/cache/register/model").glob(
        "settings.json")).read_text())
    assert settings["needs_period"] is False
    a = np.load(work / "data/processed/RRab.npz")
    assert np.isnan(a["period"]).all() and np.isfinite(a["X"]).all()


def test_the_registered_model_scores_a_folded_request_as_the_catalogue(folded_project):
    import mlflow

    work, ids, _ = folded_project
    cat = pd.read_parquet(work / "data/scored/catalogue.parquet").set_index("source_id")
    from rrlfeh.data.dg22 import read_dg22_curves

    curves = read_dg22_curves(work / "folded/lc_dev_g.tar.gz")
    some = curves[curves["source_id"].isin(ids[-5:])].assign(type="RRab")
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    out = mlflow.pyfunc.load_model("models:/rrl-feh-folded@champion").predict(some)
    out = out.set_index("source_id")
    ok = out["status"] == "ok"
    assert ok.sum() >= 4
    assert np.allclose(out.loc[ok, "feh"], cat.loc[out.index[ok], "feh"], atol=1e-6)
    # a model of one type (RRab here) takes folded curves sent without a type as that type
    untyped = mlflow.pyfunc.load_model("models:/rrl-feh-folded@champion").predict(
        some.drop(columns="type")).set_index("source_id")
    assert (untyped["type"] == "RRab").all()
    assert untyped["status"].equals(out["status"])
    assert np.allclose(untyped.loc[ok, "feh"], out.loc[ok, "feh"], atol=1e-9)


def test_report_compares_with_the_peer_star_by_star(folded_project):
    work, _, labels = folded_project
    page = (work / "reports/folded.md").read_text()
    assert "Against the peer model, star by star" in page and "had each star's period" in page
    peer = json.loads((work / "reports/report.json").read_text())["peer"]
    train = [r for r in peer if r["stars"].startswith("training")][0]
    test = [r for r in peer if r["stars"].startswith("test")][0]
    kept = np.load(work / "data/processed/RRab.npz")["y"]  # labelled curves preprocess kept
    assert train["n"] + test["n"] == len(kept) and len(kept) > 0.9 * len(labels)
    # the peer is the labels plus 0.2 dex of noise: its RMSE on any part is about 0.2
    assert 0.14 < train["peer RMSE"] < 0.26


def test_sparse_cuts_the_folded_test_curves_and_scores_them_as_the_catalogue(folded_project):
    """Stage `sparse` on pre-folded curves: every test star with enough folded points is cut to
    N of its points and kept in full, in both modes, nobody dropped; the full curve sent
    without a period gets the catalogue's [Fe/H] (the same scoring path)."""
    from rrlfeh.data.dg22 import read_dg22_curves

    work, _, _ = folded_project
    metrics = json.loads((work / "reports/sparse.json").read_text())
    pred = pd.read_parquet(work / "data/sparse/predictions.parquet")
    assert metrics["settings"]["source"] == "folded"
    with np.load(work / "data/processed/RRab.npz") as d:
        test = d["source_id"][d["is_test"] & (d["copy"] == 0)]
    points = read_dg22_curves(work / "folded/lc_dev_g.tar.gz").groupby("source_id").size()
    eligible = set(test[points.reindex(test).fillna(0).to_numpy() >= 40])
    assert len(eligible) >= 5
    for mode in ("with_period", "without_period"):
        rows = pred[(pred["mode"] == mode) & (pred["model"] == "champion")]
        assert set(rows["source_id"]) == eligible
        assert len(rows) == len(eligible) * 3  # 15, 30 and the full curve, one draw each
        sizes = rows.set_index("cut")["n_epochs"]
        assert (sizes.loc["15"] == 15).all() and (sizes.loc["30"] == 30).all()
        assert (rows["status"] == "ok").mean() > 0.9
    full = pred[(pred["cut"] == "full") & (pred["mode"] == "without_period")
                & (pred["model"] == "champion")]
    cat = pd.read_parquet(work / "data/scored/catalogue.parquet").set_index("source_id")
    assert full["feh"].to_numpy() == pytest.approx(
        cat["feh"].reindex(full["source_id"]).to_numpy(), abs=1e-6)
    page = (work / "reports/folded.md").read_text()
    assert "folded points (phase, G): each is cut to N of them" in page


def test_a_folded_curve_with_a_phase_gap_gets_the_relation_alone(folded_project):
    """A folded curve with a hole in phase: no curve for the network, the classical relation at
    the φ31, R21 of a Fourier fit of its points in phase (this model has no periods), flagged
    out of domain; checked against an independent least-squares fit (equal weights)."""
    import mlflow

    from rrlfeh.data.dg22 import read_dg22_curves
    from rrlfeh.training.ensemble import Ensemble

    work, ids, _ = folded_project
    curves = read_dg22_curves(work / "folded/lc_dev_g.tar.gz")
    sid = int(curves.groupby("source_id").size().idxmax())
    mine = curves[curves["source_id"] == sid]
    gap = mine[(mine["phase"] < 0.3) | (mine["phase"] > 0.65)]  # 0.35 of the cycle empty
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    out = mlflow.pyfunc.load_model("models:/rrl-feh-folded@champion").predict(
        gap.assign(type="RRab")).iloc[0]
    assert out["status"] == "ok" and not out["in_domain"]
    assert "phase gap" in out["domain_reason"]
    assert "[Fe/H] from the classical relation alone" in out["domain_reason"]
    assert out["feh_spread"] == 0 and out["feh_std"] > 0
    rel = Ensemble.load(work / "models/final/RRab").manifest["relation"]
    assert "period" not in rel["features"]
    values = fourier_values(2 * np.pi * gap["phase"].to_numpy(), gap["mag"].to_numpy())
    expected = relation_at(rel, values)
    assert out["feh"] == pytest.approx(expected, abs=0.02)
