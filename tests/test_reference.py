"""Stage `reference`: the paper's GRU (two channels, no skip path, params `model`) refitted on
crossval's repeat-1 folds, on a tiny project of 60 synthetic stars and the `tiny` budget. A type
crossval did not train is skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO

N_STARS, STEPS, SEED = 60, 24, 42
CHANNELS = ["standardised_mag", "phase_x_period_d", "period_d", "phi31", "r21", "amplitude_mag"]


def tiny_arrays(n: int = N_STARS, steps: int = STEPS, seed: int = 0) -> dict[str, np.ndarray]:
    """A data/processed/<type>.npz of `n` curves with the champion's six channels, three [Fe/H]
    strata of equal size and a test split of a fifth of each stratum."""
    rng = np.random.default_rng(seed)
    y = np.sort(rng.uniform(-2.5, 0.0, n))
    strata = np.repeat(np.arange(3), n // 3)
    period = rng.uniform(0.45, 0.8, n)
    phase = np.linspace(0, 1, steps, endpoint=False)
    x = np.empty((n, steps, len(CHANNELS)), np.float32)
    x[..., 0] = np.sin(2 * np.pi * (phase[None, :] + 0.1 * y[:, None]))
    x[..., 1] = phase[None, :] * period[:, None]
    for i, v in enumerate([period, y + rng.normal(0, 0.2, n), rng.uniform(0.3, 0.5, n),
                           rng.uniform(0.5, 1.2, n)], 2):
        x[..., i] = v[:, None]
    is_test = np.zeros(n, bool)
    for s in range(3):
        is_test[np.flatnonzero(strata == s)[:(n // 3) // 5]] = True
    return {"X": x, "y": y, "weights": rng.uniform(0.5, 2.0, n), "strata": strata,
            "source_id": np.arange(n, dtype=np.int64) + 10**15, "n_epochs": rng.integers(50, 90, n),
            "period": period, "is_test": is_test, "channels": np.array(CHANNELS)}


def tiny_params() -> dict:
    """The repository's params with the tiny budget, folds fitted in this process, and the
    tracking store, caches and outputs inside the project (relative paths)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["budget"] = "tiny"
    params["reference"].update(max_epochs=None, patience=None)  # the tiny budget's
    params["crossval"]["workers"] = 1
    params["tracking"].update(uri="sqlite:///mlflow.db", artifact_root="mlartifacts")
    return params


def run_stage(root: Path, params: dict) -> None:
    """`rrlfeh reference` in `root` with `params` as its params.yaml."""
    from rrlfeh import cli

    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store
        mp.chdir(root)
        assert cli.main(["reference", "--params", str(root / "params.yaml")]) == 0


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project whose crossval trained RRab only (RRc has arrays but no folds.json), after
    `rrlfeh reference`."""
    root = tmp_path_factory.mktemp("reference")
    (root / "data/processed").mkdir(parents=True)
    for seed, kind in enumerate(("RRab", "RRc")):
        np.savez(root / f"data/processed/{kind}.npz", **tiny_arrays(seed=seed))
    (root / "models/crossval/RRab").mkdir(parents=True)
    (root / "models/crossval/RRab/folds.json").write_text("{}")
    run_stage(root, tiny_params())
    return root


def tracked_runs(root: Path) -> pd.DataFrame:
    import mlflow

    client_uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(client_uri)
    return mlflow.search_runs(experiment_names=["rrlfeh"], max_results=10_000)


def test_fold_models_are_the_papers_network_on_two_channels(project: Path):
    import keras

    manifest = json.loads((project / "models/reference/RRab/manifest.json").read_text())
    assert manifest["channels"] == CHANNELS[:2] and manifest["input_shape"] == [STEPS, 2]
    assert manifest["network"]["skip"] is False
    assert manifest["network"]["units"] == [20, 16, 8]
    assert len(manifest["members"]) == 2  # tiny budget: 2 splits, reference.n_repeats 1
    for name in manifest["members"]:
        model = keras.models.load_model(project / "models/reference/RRab" / name)
        assert model.inputs[0].shape[-1] == 2
        names = {layer.name for layer in model.layers}
        assert not names & {"first_step", "per_star", "with_scalars"}  # no skip path
        assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.GRU)] \
            == [20, 16, 8]


def test_validation_folds_are_crossvals_first_repeat(project: Path):
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.kfold import stratified_folds

    # the paper's method: the stars' own curves (their sparse copies are crossval's only)
    data = load_training_set(project / "data/processed/RRab.npz", "RRab").originals()
    table = pd.read_parquet(project / "models/reference/RRab/predictions.parquet")
    assert table["source_id"].tolist() == data.source_id.tolist()
    # crossval's folds on the tiny budget: 2 splits x 2 repeats, crossval.seed
    crossval = [(k, va) for r, k, _, va in stratified_folds(data.strata, 2, 2, SEED) if r == 1]
    assert len(crossval) == 2
    for fold, va in crossval:
        assert np.flatnonzero(table["fold"].to_numpy() == fold).tolist() == sorted(va.tolist())


def test_metrics_are_the_prediction_tables_own(project: Path):
    report = json.loads((project / "reports/reference.json").read_text())
    assert set(report["RRc"]) == {"skipped"} and "folds.json" in report["RRc"]["skipped"]
    m = report["RRab"]
    assert {"val", "oof", "test", "n_stars", "n_folds", "best_epoch_median"} <= set(m)
    assert m["n_folds"] == 2 and m["n_stars"] == 48 and m["n_stars_test"] == 12
    assert set(m["val"]["rmse"]) == {"mean", "std"}
    oof = pd.read_parquet(project / "models/reference/RRab/predictions.parquet")
    assert list(oof.columns[:5]) == ["source_id", "feh", "weight", "n_epochs", "pred_oof"]
    r = oof["pred_oof"].to_numpy(float) - oof["feh"].to_numpy(float)
    assert m["oof"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(r**2))), rel=1e-9)
    assert m["oof"]["wrmse"] == pytest.approx(
        float(np.sqrt(np.sum(oof["weight"] * r**2) / oof["weight"].sum())), rel=1e-9)
    test = pd.read_parquet(project / "models/reference/RRab/test_predictions.parquet")
    rt = test["feh_pred"].to_numpy(float) - test["feh"].to_numpy(float)
    assert m["test"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(rt**2))), rel=1e-9)


def test_test_split_is_predicted_by_the_mean_of_the_fold_models(project: Path):
    import keras

    from rrlfeh.training.arrays import load_training_set

    test = load_training_set(project / "data/processed/RRab.npz", "RRab", part="test")
    table = pd.read_parquet(project / "models/reference/RRab/test_predictions.parquet")
    assert table["source_id"].tolist() == test.source_id.tolist()
    folder = project / "models/reference/RRab"
    members = json.loads((folder / "manifest.json").read_text())["members"]
    preds = [keras.models.load_model(folder / name).predict(test.X[..., :2], verbose=0)
             .reshape(-1) for name in members]
    assert table["feh_pred"].to_numpy() == pytest.approx(np.mean(preds, axis=0), abs=1e-5)


def test_every_fold_is_a_child_run_of_the_paper_gru_parent(project: Path):
    runs = tracked_runs(project)
    parent = runs[runs["tags.mlflow.runName"] == "paper GRU RRab"]
    assert len(parent) == 1
    assert parent["tags.reference"].item() == "paper_gru"
    assert parent["tags.dvc.stage"].item() == "reference"
    report = json.loads((project / "reports/reference.json").read_text())["RRab"]
    assert parent["metrics.oof_rmse"].item() == pytest.approx(report["oof"]["rmse"])
    assert parent["metrics.test_rmse"].item() == pytest.approx(report["test"]["rmse"])
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].item()]
    assert sorted(children["tags.fold"]) == ["1", "2"] and set(children["tags.repeat"]) == {"1"}
    assert (children["tags.reference"] == "paper_gru").all()
    assert (children["tags.dvc.stage"] == "reference").all()
    assert (children["params.n_channels"] == "2").all()
    assert (children["params.model.skip"] == "False").all()
    assert not (runs["tags.mlflow.runName"] == "paper GRU RRc").any()


def test_a_rerun_reuses_the_checkpointed_folds(project: Path, tmp_path: Path):
    import shutil

    work = tmp_path / "again"
    shutil.copytree(project, work)
    before = tracked_runs(work)
    report = json.loads((work / "reports/reference.json").read_text())
    run_stage(work, tiny_params())
    after = tracked_runs(work)
    assert len(after) == len(before)  # no new fold run, no new parent
    assert json.loads((work / "reports/reference.json").read_text()) == report


def test_a_channel_subset_is_another_checkpoint():
    from rrlfeh.training.kfold import FitSettings, FoldJob, first_channels
    from rrlfeh.training.tracking import TrackingSettings

    job = FoldJob(kind="RRab", data_path="x.npz", repeat=1, fold=2, train_index=np.arange(3),
                  val_index=np.arange(3, 5), spec={}, fit=FitSettings(), seed=0,
                  checkpoint_dir="ckpt",
                  tracking=TrackingSettings("sqlite:///m.db", Path("a"), "e"),
                  experiment_id="0", parent_run_id="p")
    paper = FoldJob(**{**job.__dict__, "n_channels": 2})
    assert job.model_path.name == "r1_k2.keras" and paper.model_path.name == "r1_k2_c2.keras"
    assert job.result_path != paper.result_path and job.name == paper.name

    from rrlfeh.training.arrays import TrainingSet

    a = tiny_arrays(n=6)
    data = TrainingSet("RRab", a["X"], a["y"], a["weights"], a["strata"], a["source_id"],
                       a["n_epochs"], a["period"], a["is_test"], tuple(CHANNELS))
    two = first_channels(data, 2)
    assert two.X.shape == (6, STEPS, 2) and two.channels == tuple(CHANNELS[:2])
    assert first_channels(data, None) is data
    with pytest.raises(ValueError, match="7 channels asked"):
        first_channels(data, 7)


def test_the_paper_network_has_its_own_epochs_and_patience_else_the_budgets():
    from rrlfeh.stages.reference import Settings

    params = tiny_params()
    tiny = params["budgets"]["tiny"]["crossval"]
    own = Settings.from_params(params, REPO).fit
    assert (own.max_epochs, own.patience) == (tiny["max_epochs"], tiny["patience"])
    params["reference"].update(max_epochs=7, patience=2)
    fit = Settings.from_params(params, REPO).fit
    assert (fit.max_epochs, fit.patience) == (7, 2)
    assert Settings.from_params(params, REPO).n_splits == tiny["n_splits"]  # the budget's folds
