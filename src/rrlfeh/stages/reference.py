"""Stage `reference`: the paper's GRU (Monti et al. 2025) retrained here, on crossval's folds.

The report's reference row, measured on this run's stars instead of quoted from the paper: the
network of params.yaml `model` with the skip path forced off (3 GRU blocks of 20/16/8 units,
each followed by Dropout 0.2/0.2/0.1, Dense(1), tanh, kernel L2 2e-6, recurrent L1 2e-6, Adam
0.01, batch 256) fed only the paper's two input channels of the training arrays (standardised
magnitude, phase x period), never the per-star channels of the champion.

No Hyperband search here: the paper's published hyperparameters are the result of the paper's
own Hyperband search, so the network is taken as published. It is fitted on the same folds as
`crossval`'s first repeat (`stratified_folds` gives repeat 1 identically whatever the number of
repeats), with its own epochs and patience (`reference.max_epochs`, `patience`; null: crossval's
budget), crossval's early stopping, seeds and fold jobs (`FoldJob`,
`fit_fold`, `run_jobs`): every fold a nested MLflow run under `paper GRU <type>`, checkpointed
in data/cache/reference so a stopped run resumes. The test split of `preprocess` is predicted by
the mean of the fold models, as `train`'s ensemble predicts it.

Writes models/reference/<type>/ (fold models, manifest.json, predictions.parquet,
test_predictions.parquet) and reports/reference.json.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import write_json, write_parquet
from rrlfeh.training.kfold import FitSettings, FoldJob, first_channels, star_folds
from rrlfeh.training.metrics import aggregate, regression_metrics
from rrlfeh.training.model import SEQUENCE_CHANNELS, NetworkSpec
from rrlfeh.training.tracking import TrackingSettings

if TYPE_CHECKING:
    from rrlfeh.training.arrays import TrainingSet

log = logging.getLogger(__name__)

PAPER_CHANNELS = ("standardised_mag", "phase_x_period_d")  # the paper's input per step
TAG = {"reference": "paper_gru"}                            # on the parent and every fold run


@dataclass(frozen=True)
class Settings:
    """What the reference fits spend: crossval's folds, seed and fit settings, its own repeats."""

    n_splits: int
    n_repeats: int
    seed: int
    fit: FitSettings
    workers: int
    cache_dir: Path
    out_dir: Path

    @classmethod
    def from_params(cls, params: Mapping[str, Any], root: Path) -> Settings:
        """params.yaml `reference`, `crossval` and the active budget's `crossval` block."""
        from rrlfeh import config

        ref, c = config.section(params, "reference"), config.section(params, "crossval")
        # the budget's folds; its epochs and patience unless `reference` sets its own (the
        # paper's network, without the per-star path, learns more slowly than the champion's)
        budget = {**config.training_budget(params)["crossval"],
                  **{k: ref[k] for k in ("max_epochs", "patience") if ref.get(k) is not None}}
        # one repeat by default: the paper's network costs as much as a crossval repeat, and
        # repeat 1 alone is already the champion's own folds (a like-for-like comparison)
        return cls(n_splits=int(budget["n_splits"]), n_repeats=int(ref.get("n_repeats", 1)),
                   seed=int(c["seed"]), fit=FitSettings.from_params(c, budget),
                   workers=int(c.get("workers", 0)),
                   cache_dir=root / ref.get("cache_dir", "data/cache/reference"),
                   out_dir=root / ref.get("out_dir", "models/reference"))


@dataclass
class Plan:
    """One type's fold jobs and what summarising them needs."""

    kind: str
    path: Path
    data: TrainingSet  # the training stars, on the paper's channels
    jobs: list[FoldJob]
    parent_id: str


def paper_network(params: Mapping[str, Any]) -> dict[str, Any]:
    """params.yaml `model` with the skip path off: the paper's network (validated)."""
    from rrlfeh import config

    return NetworkSpec.from_params({**config.section(params, "model"), "skip": False}).as_dict()


def checkpoint_dir(kind: str, path: Path, network: Mapping[str, Any], s: Settings) -> Path:
    """The type's cache folder, keyed by everything a fold result depends on (the data file's
    hash, the training code, the network, the folds, the fit and the channels)."""
    from rrlfeh.stages.tune import code_digest, config_hash
    from rrlfeh.training.tracking import file_md5

    key = config_hash(dict(network), asdict(s.fit), s.n_splits, s.n_repeats, s.seed,
                      SEQUENCE_CHANNELS, file_md5(path), code_digest())
    ckpt = s.cache_dir / f"{kind}-{key}"
    ckpt.mkdir(parents=True, exist_ok=True)
    return ckpt


def parent_run(kind: str, path: Path, ckpt: Path, n_stars: int, logged: Mapping[str, Any],
               root: Path) -> str:
    """The type's parent run `paper GRU <type>`: created once, then resumed from the checkpoint
    folder's note of its id (a stopped run keeps its parent)."""
    import mlflow

    from rrlfeh.training.tracking import stage_run

    note = ckpt / "mlflow_parent_run_id"
    if note.exists():
        log.info("%s: resuming reference run %s from %s", kind, note.read_text().strip(), ckpt)
        return note.read_text().strip()
    with stage_run(f"paper GRU {kind}", stage="reference", root=root, params=logged,
                   tags={"rr_type": kind, **TAG}, inputs=[path]) as run:
        mlflow.log_params({"rr_type": kind, "n_stars": n_stars})
    note.write_text(run.info.run_id)
    return run.info.run_id


def plan_type(kind: str, path: Path, network: Mapping[str, Any], s: Settings,
              tracking: TrackingSettings, experiment_id: str, root: Path) -> Plan:
    """The fold jobs of one type: crossval's repeat-1 folds (and later repeats if asked), the
    paper's network, the first two channels, under the type's parent run."""
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.tracking import git_tags

    data = first_channels(load_training_set(path, kind), SEQUENCE_CHANNELS)
    if data.channels != PAPER_CHANNELS:
        log.warning("%s: the first channels are %s, not the paper's %s", kind, data.channels,
                    PAPER_CHANNELS)
    # the paper's method: the stars' own curves, never the sparse copies; crossval's folds
    folds = star_folds(data, s.n_splits, s.n_repeats, s.seed, originals_only=True)
    ckpt = checkpoint_dir(kind, path, network, s)
    logged = {"model": dict(network), "fit": asdict(s.fit), "n_splits": s.n_splits,
              "n_repeats": s.n_repeats, "seed": s.seed, "channels": list(data.channels)}
    parent_id = parent_run(kind, path, ckpt, len(data), logged, root)
    tags = {**git_tags(root), "dvc.stage": "reference", **TAG}
    jobs = [FoldJob(kind=kind, data_path=str(path), repeat=r, fold=k, train_index=tr,
                    val_index=va, spec=dict(network), fit=s.fit, seed=s.seed + 1000 * r + k,
                    checkpoint_dir=str(ckpt), tracking=tracking, experiment_id=experiment_id,
                    parent_run_id=parent_id, tags=tags, n_channels=SEQUENCE_CHANNELS)
            for r, k, tr, va in folds]
    return Plan(kind, path, data, jobs, parent_id)


def oof_table(data: TrainingSet, results: list[dict[str, Any]], n_repeats: int) -> pd.DataFrame:
    """Per training star: label, weight, epochs, out-of-fold prediction (mean over repeats) and
    the repeat-1 fold that held it out."""
    from rrlfeh.stages.crossval import fold_predictions

    oof, _ = fold_predictions(results, len(data), n_repeats)
    fold = np.zeros(len(data), int)
    for r in results:
        if r["repeat"] == 1:
            fold[r["val_index"]] = r["fold"]
    own = ~data.is_copy  # the stars' own curves (the copies are not fitted here)
    return pd.DataFrame({"source_id": data.source_id, "feh": data.y, "weight": data.weights,
                         "n_epochs": data.n_epochs, "pred_oof": oof.mean(axis=0),
                         "fold": fold})[own].reset_index(drop=True)


def predict_test_split(folder: Path, path: Path, kind: str) -> pd.DataFrame:
    """The test split on the paper's channels, predicted by the mean of the fold models (the
    folder's manifest.json and members, loaded as `train`'s ensemble is)."""
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.ensemble import Ensemble

    test = first_channels(load_training_set(path, kind, part="test"), SEQUENCE_CHANNELS)
    mean, spread = Ensemble.load(folder).predict(test.X)
    return pd.DataFrame({"source_id": test.source_id, "feh": test.y, "weight": test.weights,
                         "n_epochs": test.n_epochs, "period": test.period, "feh_pred": mean,
                         "feh_spread": spread})


def strip_n(m: Mapping[str, float]) -> dict[str, float]:
    """Table-1 metrics without the star count."""
    return {k: v for k, v in m.items() if k != "n"}


def type_metrics(results: list[dict[str, Any]], oof: pd.DataFrame,
                 test: pd.DataFrame) -> dict[str, Any]:
    """reports/reference.json of one type: per-fold validation aggregate, out-of-fold and test
    figures (KDE-weighted forms as crossval's), counts and the median best epoch."""
    m: dict[str, Any] = {
        "val": aggregate(r["metrics_val"] for r in results),
        "oof": strip_n(regression_metrics(oof["feh"], oof["pred_oof"], oof["weight"])),
        "n_stars": len(oof), "n_folds": len(results),
        "best_epoch_median": float(np.median([r["best_epoch"] for r in results])),
        "n_stars_test": len(test),
    }
    if len(test) >= 2:
        m["test"] = strip_n(regression_metrics(test["feh"], test["feh_pred"], test["weight"]))
    return m


def write_type(plan: Plan, results: list[dict[str, Any]], network: Mapping[str, Any],
               dest: Path, n_repeats: int) -> dict[str, Any]:
    """models/reference/<type>/: the fold models with a manifest, the out-of-fold and test
    tables; returns the type's metrics."""
    dest.mkdir(parents=True, exist_ok=True)
    members = []
    for job in plan.jobs:
        shutil.copy2(job.model_path, dest / job.model_path.name)
        members.append(job.model_path.name)
    manifest = {"rr_type": plan.kind, "strategy": "ensemble", "reference": "paper_gru",
                "members": members, "input_shape": list(plan.data.input_shape),
                "channels": list(plan.data.channels), "network": dict(network),
                "mlflow_run_id": plan.parent_id,
                "folds": [{k: r[k] for k in ("repeat", "fold", "best_epoch", "epochs_run",
                                             "stopped_by", "run_id", "metrics_val")}
                          for r in results]}
    write_json(manifest, dest / "manifest.json")  # what Ensemble.load reads; metrics added below
    oof = oof_table(plan.data, results, n_repeats)
    write_parquet(oof, dest / "predictions.parquet")
    test = predict_test_split(dest, plan.path, plan.kind)
    write_parquet(test, dest / "test_predictions.parquet")
    m = type_metrics(results, oof, test)
    write_json({**manifest, "metrics": m}, dest / "manifest.json")
    return m


def log_parent(parent_id: str, m: Mapping[str, Any], dest: Path) -> None:
    """The type's figures as metrics of its parent run, with the prediction tables."""
    import mlflow

    flat = {f"val_{name}_{stat}": v[stat] for name, v in m["val"].items()
            for stat in ("mean", "std")}
    flat.update({f"oof_{k}": v for k, v in m["oof"].items()})
    flat.update({f"test_{k}": v for k, v in m.get("test", {}).items()})
    flat.update({k: m[k] for k in ("n_stars", "n_folds", "best_epoch_median", "n_stars_test")})
    with mlflow.start_run(run_id=parent_id):
        mlflow.log_metrics(flat)
        for name in ("predictions.parquet", "test_predictions.parquet"):
            mlflow.log_artifact(str(dest / name))


def run(processed_dir: Path, crossval_dir: Path, params: Mapping[str, Any], root: Path,
        metrics_path: Path) -> None:
    """Fit the paper's network on every type crossval trained; write models/reference/<type>/
    and the metrics file (a type crossval skipped gets {"skipped": reason})."""
    from rrlfeh import config
    from rrlfeh.training.kfold import fit_fold
    from rrlfeh.training.runner import run_jobs
    from rrlfeh.training.tracking import setup_tracking

    s = Settings.from_params(params, root)
    network = paper_network(params)
    tracking = TrackingSettings.from_params(config.section(params, "tracking"), root)
    experiment_id = setup_tracking(tracking)
    metrics: dict[str, Any] = {}
    plans: dict[str, Plan] = {}
    for kind in schema.TYPES:
        folds = crossval_dir / kind / "folds.json"
        if not folds.exists():
            shown = folds.relative_to(root) if folds.is_relative_to(root) else folds
            metrics[kind] = {"skipped": f"crossval trained no {kind} model (no {shown})"}
            log.warning("%s: no reference fit, %s", kind, metrics[kind]["skipped"])
            continue
        plans[kind] = plan_type(kind, processed_dir / f"{kind}.npz", network, s, tracking,
                                experiment_id, root)
    jobs = [job for plan in plans.values() for job in plan.jobs]
    log.info("paper GRU: %d fold fits over %s", len(jobs), ", ".join(plans) or "no type")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in plans}
    for res in run_jobs(fit_fold, jobs, s.workers):
        results[res["kind"]].append(res)
    if s.out_dir.exists():
        shutil.rmtree(s.out_dir)
    s.out_dir.mkdir(parents=True)
    for kind, plan in plans.items():
        done = sorted(results[kind], key=lambda r: (r["repeat"], r["fold"]))
        m = write_type(plan, done, network, s.out_dir / kind, s.n_repeats)
        log_parent(plan.parent_id, m, s.out_dir / kind)
        metrics[kind] = m
        log.info("%s paper GRU: validation RMSE %.3f ± %.3f, out-of-fold RMSE %.3f, test RMSE "
                 "%s", kind, m["val"]["rmse"]["mean"], m["val"]["rmse"]["std"],
                 m["oof"]["rmse"], f"{m['test']['rmse']:.3f}" if "test" in m else "n/a")
    write_json(metrics, metrics_path)
