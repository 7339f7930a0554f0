"""The evaluation does not flatter: on the session's tiny `dvc repro` project, the test split of
`preprocess` never reaches tune or crossval, early stopping watches an inner split of each
fold's training part, and `train` reports the test split once, with numbers that an independent
prediction of the saved ensemble reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def workdir(pipeline_project: Path) -> Path:
    return pipeline_project


def split_ids(workdir: Path, kind: str) -> tuple[set[int], set[int]]:
    """(training stars, test stars) of `preprocess`'s arrays (a star's copies share its id)."""
    a = np.load(workdir / f"data/processed/{kind}.npz")
    ids = a["source_id"].astype(np.int64)
    return set(ids[~a["is_test"]].tolist()), set(ids[a["is_test"]].tolist())


def fold_runs(workdir: Path, kind: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["rrlfeh"], max_results=10_000)
    return runs[(runs["tags.dvc.stage"] == "crossval") & (runs["tags.rr_type"] == kind)
                & runs["tags.fold"].notna()]


@pytest.mark.parametrize("kind", ["RRab", "RRc"])
def test_test_stars_never_reach_tune_or_crossval(workdir: Path, kind: str):
    train_ids, test_ids = split_ids(workdir, kind)
    assert test_ids and not train_ids & test_ids
    oof = pd.read_parquet(workdir / f"models/crossval/{kind}/predictions.parquet")
    assert set(oof["source_id"].tolist()) == train_ids  # every training star, no test star
    tune = json.loads((workdir / "models/best_hparams.json").read_text())[kind]
    assert tune["n_train"] + tune["n_val"] == len(train_ids)
    folds = fold_runs(workdir, kind)
    n_train = folds["params.n_train"].astype(int) + folds["params.n_val"].astype(int)
    assert (n_train == len(train_ids)).all()
    test = pd.read_parquet(workdir / f"models/final/{kind}/test_predictions.parquet")
    assert set(test["source_id"].tolist()) == test_ids


@pytest.mark.parametrize("kind", ["RRab", "RRc"])
def test_early_stopping_watches_an_inner_split_of_the_fold_training_stars(workdir: Path,
                                                                         kind: str):
    folds = fold_runs(workdir, kind)
    n_fit, n_stop = folds["params.n_fit"].astype(int), folds["params.n_stop"].astype(int)
    # the network fits the stars' own curves here (crossval.network_copies 0): every training
    # star is in the fit part or the early-stopping part, and its copies are in neither
    assert (folds["params.n_fit_copies"].astype(int) == 0).all()
    assert (folds["params.n_train_copies"].astype(int) > 0).all()  # the copies exist
    assert (n_fit + n_stop == folds["params.n_train"].astype(int)).all()
    assert ((n_stop - 0.15 * folds["params.n_train"].astype(int)).abs() <= 1).all()
    # the reported validation figures are those of the fold's own validation stars: an
    # independent prediction of the saved fold model on them gives the logged RMSE
    import keras

    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.kfold import star_folds

    data = load_training_set(workdir / f"data/processed/{kind}.npz", kind)
    splits = star_folds(data, 2, 2, 42)  # tiny budget, crossval.seed; copies with their star
    repeat, fold, _, va = splits[0]
    va = va[~data.is_copy[va]]  # the figures are on the stars' own curves
    model = keras.models.load_model(workdir / f"models/crossval/{kind}/r{repeat}_k{fold}.keras")
    pred = model.predict(data.X[va], verbose=0).reshape(-1)
    logged = folds[(folds["tags.repeat"] == str(repeat)) & (folds["tags.fold"] == str(fold))]
    rmse = float(np.sqrt(np.mean((pred - data.y[va]) ** 2)))
    assert rmse == pytest.approx(float(logged["metrics.val_rmse"].item()), rel=1e-4)


def test_test_figures_are_the_saved_ensembles_own(workdir: Path):
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.ensemble import Ensemble

    train = json.loads((workdir / "reports/train.json").read_text())
    for kind in ("RRab", "RRc"):
        test = load_training_set(workdir / f"data/processed/{kind}.npz", kind, part="test")
        ens = Ensemble.load(workdir / f"models/final/{kind}")
        net = np.mean([m.predict(test.X, verbose=0).reshape(-1) for m in ens.models], axis=0)
        assert train[kind]["network_test"]["rmse"] == pytest.approx(
            float(np.sqrt(np.mean((net - test.y) ** 2))), rel=1e-4)
        # served: the stack the gate chose, with the relation fitted on the training stars
        # (the line on the stars' own curves, never on their sparse copies)
        train_set = load_training_set(workdir / f"data/processed/{kind}.npz", kind).originals()
        rel = ens.manifest["relation"]
        cols = lambda d, rel=rel: np.column_stack(  # noqa: E731
            [getattr(d, f) for f in rel["features"]])
        coef = np.linalg.lstsq(np.column_stack([np.ones(len(train_set.y)), cols(train_set)]),
                               train_set.y.astype(float), rcond=None)[0]
        assert coef == pytest.approx(rel["coef"], rel=1e-6, abs=1e-9)
        # per bin of epoch counts: its weight, and the line or the bin's plane (clipped inputs)
        stack = ens.manifest["stack"]
        b = np.digitize(test.n_epochs, stack["edges"][1:-1])
        line = coef[0] + cols(test) @ coef[1:]
        feats = np.column_stack([getattr(test, f) for f in stack["features"]])
        lo, hi = np.asarray(stack["clip"], float).T
        pred = np.empty(len(test.y))
        for i, e in enumerate(stack["bins"]):
            rows = b == i
            rel_i = line[rows]
            if e["relation"] == "plane":
                c = np.asarray(e["coef"])
                rel_i = c[0] + np.clip(feats[rows], lo, hi) @ c[1:]
            pred[rows] = e["weight"] * net[rows] + (1 - e["weight"]) * rel_i
        rmse = float(np.sqrt(np.mean((pred - test.y) ** 2)))
        assert train[kind]["test"]["rmse"] == pytest.approx(rmse, rel=1e-4)
        assert train[kind]["n_stars_test"] == len(test.y)
        cov = train[kind]["coverage_test"]
        assert 0 <= cov["within_1sigma"] <= cov["within_2sigma"] <= 1


def test_default_budget_stops_by_epochs_only():
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert "max_fit_seconds" not in params["budgets"]["default"]["crossval"]
