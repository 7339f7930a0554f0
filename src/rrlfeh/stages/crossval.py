"""Stage `crossval`: repeated stratified K-fold of the tuned network, every fold an MLflow run.

Per type: the training stars only (the test split of `preprocess` is not loaded), folds
stratified on their [Fe/H] bins, early stopping on an inner split of each fold's training
part, fold jobs spread over the cores. Aggregates (mean ± std over folds of R², wRMSE, wMAE,
RMSE, MAE for train and validation, paper Table 1) go to the metrics file and to the type's K-fold
parent run, with the figures (learning curves, true vs predicted, residuals against the number
of epochs). Fold models and out-of-fold predictions go to models/crossval/<type>/ for `train`.
Fold results are checkpointed in data/cache/crossval/, so a stopped run resumes.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import atomic_path, write_json, write_parquet
from rrlfeh.training.kfold import FitSettings, FoldJob, fit_fold, stratified_folds
from rrlfeh.training.metrics import aggregate, regression_metrics
from rrlfeh.training.tracking import TrackingSettings, file_md5

log = logging.getLogger(__name__)


def fold_predictions(results: list[dict[str, Any]], n: int,
                     n_repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """(out-of-fold prediction per repeat (R, N), mean in-training prediction (N,))."""
    oof = np.full((n_repeats, n), np.nan)
    train_sum, train_n = np.zeros(n), np.zeros(n)
    for r in results:
        oof[r["repeat"] - 1, r["val_index"]] = r["pred_val"]
        train_sum[r["train_index"]] += r["pred_train"]
        train_n[r["train_index"]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return oof, train_sum / train_n


def baseline_folds(data, results: list[dict[str, Any]],
                   n_repeats: int) -> tuple[list[dict[str, float]], np.ndarray]:
    """The classical (P, φ31, R21) plane fitted on each fold's training part: its validation
    metrics per fold and its out-of-fold prediction (mean over repeats)."""
    from rrlfeh.training.baseline import LinearRelation, plane_features

    feats = plane_features(data.X, data.period)
    per_fold, oof = [], np.zeros((n_repeats, len(data)))
    for r in results:
        tr, va = np.asarray(r["train_index"]), np.asarray(r["val_index"])
        pred = LinearRelation().fit(feats[tr], data.y[tr], data.weights[tr]).predict(feats[va])
        per_fold.append(regression_metrics(data.y[va], pred, data.weights[va]))
        oof[r["repeat"] - 1, va] = pred
    return per_fold, oof.mean(axis=0)


def summarise(kind: str, data, results: list[dict[str, Any]], n_repeats: int,
              figures_dir: Path) -> tuple[dict[str, Any], pd.DataFrame, list[Path]]:
    """Table-1 aggregates, the per-star prediction table and the three figures of one type."""
    from rrlfeh.training import plots

    results = sorted(results, key=lambda r: (r["repeat"], r["fold"]))
    oof, pred_train = fold_predictions(results, len(data), n_repeats)
    pred_oof = oof.mean(axis=0)
    base_folds, base_oof = baseline_folds(data, results, n_repeats)
    metrics = {
        "train": aggregate(r["metrics_train"] for r in results),
        "val": aggregate(r["metrics_val"] for r in results),
        "oof": {k: v for k, v in regression_metrics(data.y, pred_oof, data.weights).items()
                if k != "n"},
        "baseline_val": aggregate(base_folds),
        "baseline_oof": {k: v for k, v in regression_metrics(
            data.y, base_oof, data.weights).items() if k != "n"},
        "n_stars": len(data), "n_folds": len(results),
        "best_epoch_median": float(np.median([r["best_epoch"] for r in results])),
        "stopped_by": {k: sum(r.get("stopped_by") == k for r in results)
                       for k in ("early_stopping", "max_epochs", "time_budget")},
    }
    table = pd.DataFrame({"source_id": data.source_id, "feh": data.y, "weight": data.weights,
                          "n_epochs": data.n_epochs, "period": data.period,
                          "pred_oof": pred_oof, "pred_train_mean": pred_train})
    for r in range(n_repeats):
        table[f"pred_oof_r{r + 1}"] = oof[r]
    m_tr = {k: v["mean"] for k, v in metrics["train"].items()}
    m_va = {k: v["mean"] for k, v in metrics["val"].items()}
    figs = [
        plots.learning_curves([r["history"] for r in results],
                              figures_dir / f"{kind}_learning_curves.png",
                              labels=[f"r{r['repeat']}k{r['fold']}" for r in results],
                              held_out="stop", held_out_label="early-stopping split",
                              title=f"{kind}: learning curves of {len(results)} folds"),
        plots.true_vs_predicted(data.y, pred_train, data.y, pred_oof,
                                figures_dir / f"{kind}_true_vs_predicted.png",
                                title=f"{kind}: training (mean over folds) and validation "
                                      "(out-of-fold)", metrics_train=m_tr, metrics_val=m_va),
        plots.residuals_vs_epochs(data.n_epochs, pred_oof - data.y,
                                  figures_dir / f"{kind}_residuals_vs_epochs.png",
                                  title=f"{kind}: out-of-fold residuals"),
    ]
    return metrics, table, figs


def crossval_type(kind: str, path: Path, network: Mapping[str, Any], params: Mapping[str, Any],
                  budget: Mapping[str, Any], tracking: TrackingSettings, experiment_id: str,
                  root: Path, logged: Mapping[str, Any]):
    """Fit all folds of one type (resuming finished ones); returns (metrics, table, figures)."""
    import mlflow

    from rrlfeh.stages.tune import code_digest, config_hash
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.tracking import git_tags, log_data_inputs, log_params

    c = params
    data = load_training_set(path, kind)
    n_splits, n_repeats = int(budget["n_splits"]), int(budget["n_repeats"])
    fit = FitSettings(max_epochs=int(budget["max_epochs"]), patience=int(budget["patience"]),
                      min_delta=float(c.get("min_delta", 1e-5)),
                      progress_every=int(c.get("progress_every", 10)),
                      deterministic=bool(c.get("deterministic", True)),
                      max_seconds=(float(budget["max_fit_seconds"])
                                   if budget.get("max_fit_seconds") else None),
                      stop_fraction=float(c.get("stop_fraction", 0.15)))
    folds = stratified_folds(data.strata, n_splits, n_repeats, int(c["seed"]))
    ckpt = root / c["cache_dir"] / (f"{kind}-" + config_hash(
        dict(network), dict(budget), dict(c), file_md5(path), code_digest()))
    ckpt.mkdir(parents=True, exist_ok=True)
    parent_file = ckpt / "mlflow_parent_run_id"
    client = mlflow.MlflowClient()
    if parent_file.exists():
        parent_id = parent_file.read_text().strip()
        log.info("%s: resuming K-fold run %s from %s", kind, parent_id, ckpt)
    else:
        run = client.create_run(experiment_id, run_name=f"crossval {kind}",
                                tags={**git_tags(root), "dvc.stage": "crossval", "rr_type": kind})
        parent_id = run.info.run_id
        with mlflow.start_run(run_id=parent_id):
            log_params(logged)
            mlflow.log_params({"rr_type": kind, "n_stars": len(data), "n_splits": n_splits,
                               "n_repeats": n_repeats})
            log_data_inputs([path], root)
        parent_file.write_text(parent_id)
    jobs = [FoldJob(kind=kind, data_path=str(path), repeat=r, fold=k, train_index=tr,
                    val_index=va, spec=dict(network), fit=fit,
                    seed=int(c["seed"]) + 1000 * r + k, checkpoint_dir=str(ckpt),
                    tracking=tracking, experiment_id=experiment_id, parent_run_id=parent_id,
                    tags=git_tags(root))
            for r, k, tr, va in folds]
    return data, jobs, parent_id, ckpt, n_repeats


FIGURES = ("learning_curves", "true_vs_predicted", "residuals_vs_epochs")


def skipped_figures(kind: str, why: str, figures_dir: Path) -> list[Path]:
    """The type's declared figures for a type with no K-fold, each saying why (a real-data run
    with 10 RRc stars must not stop on a missing DVC output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in FIGURES:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{kind}: no K-fold\n{why}", ha="center", va="center", fontsize=11,
                wrap=True)
        path = figures_dir / f"{kind}_{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def run(processed_dir: Path, hparams_path: Path, params: Mapping[str, Any], root: Path,
        metrics_path: Path) -> None:
    """K-fold every tuned type; write models/crossval/<type>/, metrics and figures."""
    import json

    import mlflow

    from rrlfeh import config
    from rrlfeh.training.runner import run_jobs
    from rrlfeh.training.tracking import setup_tracking

    t0 = time.monotonic()
    c = config.section(params, "crossval")
    budget = config.training_budget(params)
    tracking = TrackingSettings.from_params(config.section(params, "tracking"), root)
    experiment_id = setup_tracking(tracking)
    best = json.loads(hparams_path.read_text())
    out_dir, figures_dir = root / c["out_dir"], root / c["figures_dir"]
    logged = {"crossval": dict(c), "budget": dict(budget)}
    metrics: dict[str, Any] = {}
    plans, all_jobs = {}, []
    for kind in schema.TYPES:
        entry = best.get(kind, {"skipped": "not in the tune output"})
        if "skipped" in entry:
            metrics[kind] = {"skipped": entry["skipped"]}
            log.warning("%s: no K-fold, %s", kind, entry["skipped"])
            skipped_figures(kind, str(entry["skipped"]), figures_dir)
            continue
        plan = crossval_type(kind, processed_dir / f"{kind}.npz", entry["network"], c,
                             budget["crossval"], tracking, experiment_id, root,
                             {**logged, "model": entry["network"]})
        plans[kind] = plan
        all_jobs.extend(plan[1])
    log.info("K-fold: %d fold fits over %s", len(all_jobs), ", ".join(plans))
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in plans}
    for i, res in enumerate(run_jobs(fit_fold, all_jobs, int(c.get("workers", 0))), 1):
        results[res["kind"]].append(res)
        log.info("K-fold progress: %d/%d folds done (%.0f s)", i, len(all_jobs),
                 time.monotonic() - t0)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for kind, (data, jobs, parent_id, _ckpt, n_repeats) in plans.items():
        m, table, figs = summarise(kind, data, results[kind], n_repeats, figures_dir)
        dest = out_dir / kind
        dest.mkdir(parents=True, exist_ok=True)
        members = []
        for job in jobs:
            shutil.copy2(job.model_path, dest / job.model_path.name)
            members.append(job.model_path.name)
        write_parquet(table, dest / "predictions.parquet")
        write_json({"members": members, "network": best[kind]["network"],
                    "folds": [{k: r[k] for k in ("repeat", "fold", "best_epoch", "epochs_run",
                                                 "stopped_by", "run_id", "metrics_train",
                                                 "metrics_val")}
                              for r in sorted(results[kind],
                                              key=lambda r: (r["repeat"], r["fold"]))],
                    "mlflow_run_id": parent_id, "metrics": m}, dest / "folds.json")
        with mlflow.start_run(run_id=parent_id):
            flat = {f"{part}_{name}_{stat}": v[stat]
                    for part in ("train", "val") for name, v in m[part].items()
                    for stat in ("mean", "std")}
            flat.update({f"oof_{k}": v for k, v in m["oof"].items()})
            flat.update({f"baseline_val_{name}_mean": v["mean"]
                         for name, v in m["baseline_val"].items()})
            mlflow.log_metrics({**flat, "best_epoch_median": m["best_epoch_median"]})
            for f in figs:
                mlflow.log_artifact(str(f), artifact_path="figures")
            mlflow.log_artifact(str(dest / "predictions.parquet"))
        metrics[kind] = m
        log.info("%s: validation R2 %.3f ± %.3f, RMSE %.3f ± %.3f, wRMSE %.3f ± %.3f (classical "
                 "P-phi31-R21 plane: R2 %.3f, RMSE %.3f)", kind,
                 m["val"]["r2"]["mean"], m["val"]["r2"]["std"], m["val"]["rmse"]["mean"],
                 m["val"]["rmse"]["std"], m["val"]["wrmse"]["mean"], m["val"]["wrmse"]["std"],
                 m["baseline_val"]["r2"]["mean"], m["baseline_val"]["rmse"]["mean"])
    write_json(metrics, metrics_path)
