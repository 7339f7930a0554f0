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
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import atomic_path, write_json, write_parquet
from rrlfeh.training.baseline import choose_relation, relation_features
from rrlfeh.training.kfold import FitSettings, FoldJob, fit_fold, star_folds
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


def relation_on_folds(data, results: list[dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray]:
    """The classical relation chosen and fitted on the network's folds: its form, coefficients
    (all training stars), validation metrics per fold, and out-of-fold predictions."""
    folds = [(r["repeat"], np.asarray(r["train_index"]), np.asarray(r["val_index"]))
             for r in results]
    rel = choose_relation(data, folds)
    own = ~data.is_copy  # Table 1: the stars' own curves of each validation part
    rel["val"] = aggregate(regression_metrics(data.y[va][own[va]], pred[own[va]],
                                              data.weights[va][own[va]])
                           for (_, _, va), pred in zip(folds, rel.pop("per_fold"), strict=True))
    return rel, rel.pop("oof")


def served_summary(data, stack: dict[str, Any], network_oof: np.ndarray, rel_oof: np.ndarray,
                   served_oof: np.ndarray) -> dict[str, Any]:
    """The per-bin stack with what the gate and the tags read, on the stars' own curves: what
    is served ('network', 'relation' or 'stack'), the weight of the bin holding most stars,
    the out-of-fold RMSEs and a one-line reason per bin."""
    from rrlfeh.training.baseline import rmse
    from rrlfeh.training.served import describe

    own = ~data.is_copy
    bins = stack["bins"]
    served = ("network" if all(e["weight"] == 1.0 for e in bins) else "relation"
              if all(e["weight"] == 0.0 and e["relation"] == "line" for e in bins) else "stack")
    main = max(bins, key=lambda e: e["n_own"])
    return {**stack, "served": served, "weight": main["weight"],
            "reason": describe(stack),
            "oof_rmse": rmse(data.y[own], served_oof[own]),
            "network_oof_rmse": rmse(data.y[own], network_oof[own]),
            "relation_oof_rmse": rmse(data.y[own], rel_oof[own])}


def summarise(kind: str, data, results: list[dict[str, Any]], n_repeats: int,
              figures_dir: Path, copy_sizes: tuple[int, ...] = (), own_curves_line: bool = True
              ) -> tuple[dict[str, Any], pd.DataFrame, list[Path]]:
    """Table-1 aggregates (the stars' own curves), the prediction table of every curve (sparse
    copies too) and the three figures of one type; the served stack chosen per bin of epoch
    counts (bins between the copies' sizes `copy_sizes`; `own_curves_line`: see
    `choose_served`)."""
    from rrlfeh.training import plots
    from rrlfeh.training.served import choose_served, epoch_edges

    results = sorted(results, key=lambda r: (r["repeat"], r["fold"]))
    oof_all, train_all = fold_predictions(results, len(data), n_repeats)
    relation, rel_oof = relation_on_folds(data, results)
    folds = [(r["repeat"], np.asarray(r["train_index"]), np.asarray(r["val_index"]))
             for r in results]
    edges = epoch_edges(copy_sizes if data.is_copy.any() else ())
    stack, served_all = choose_served(data, oof_all.mean(axis=0), rel_oof, folds, edges,
                                      relation, own_curves_line)
    stack = served_summary(data, stack, oof_all.mean(axis=0), rel_oof, served_all)
    table = pd.DataFrame({"source_id": data.source_id, "copy": data.copy, "feh": data.y,
                          "weight": data.weights, "n_epochs": data.n_epochs,
                          "period": data.period, "pred_oof": oof_all.mean(axis=0),
                          "pred_train_mean": train_all, "relation_oof": rel_oof,
                          "served_oof": served_all})
    for r in range(n_repeats):
        table[f"pred_oof_r{r + 1}"] = oof_all[r]
    own = ~data.is_copy  # Table 1 and the figures: the stars' own curves
    data, oof, pred_train = data.originals(), oof_all[:, own], train_all[own]
    pred_oof, rel_oof, served_oof = oof.mean(axis=0), rel_oof[own], served_all[own]
    oof_metrics = lambda pred: {k: v for k, v in regression_metrics(  # noqa: E731
        data.y, pred, data.weights).items() if k != "n"}
    metrics = {
        "train": aggregate(r["metrics_train"] for r in results),
        "val": aggregate(r["metrics_val"] for r in results),
        "oof": oof_metrics(pred_oof),
        # the classical relation on the same folds, and the served stack (gate: register)
        "baseline_val": relation["val"],
        "baseline_oof": oof_metrics(rel_oof),
        "relation": {k: v for k, v in relation.items() if k != "val"},
        "stack": {**stack, "oof": oof_metrics(served_oof)},
        "n_stars": len(data), "n_copies": int(len(table) - len(data)),
        "n_folds": len(results),
        "best_epoch_median": float(np.median([r["best_epoch"] for r in results])),
        "stopped_by": {k: sum(r.get("stopped_by") == k for r in results)
                       for k in ("early_stopping", "max_epochs", "time_budget")},
    }
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
    fit = FitSettings.from_params(c, budget)
    folds = star_folds(data, n_splits, n_repeats, int(c["seed"]))  # a star's copies with it
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
                    tags=git_tags(root), max_copy=(None if c.get("network_copies") is None
                                                   else int(c["network_copies"])))
            for r, k, tr, va in folds]
    return data, jobs, parent_id, ckpt, n_repeats


def log_relation(kind: str, data, data_path: Path, m: Mapping[str, Any], experiment_id: str,
                 parent_id: str, root: Path) -> str:
    """The classical relation as a candidate of its own: an MLflow run in the experiment (same
    folds as the network's K-fold run, linked by tag) with its figures and the fitted relation
    as a scikit-learn model of its features."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    from rrlfeh.training.tracking import git_tags, log_data_inputs

    rel = m["relation"]
    done = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.crossval_run_id = '{parent_id}' and "
        f"tags.candidate = 'relation' and tags.rr_type = '{kind}'", output_format="list")
    if done:  # a resumed K-fold: the relation of these folds is logged already
        return done[0].info.run_id
    own = data.originals()  # the line of the stars' own curves
    model = LinearRegression().fit(relation_features(own, rel["form"]), own.y)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"relation {kind}",
                          tags={**git_tags(root), "dvc.stage": "crossval", "rr_type": kind,
                                "candidate": "relation", "crossval_run_id": parent_id}) as run:
        log_data_inputs([data_path], root)
        mlflow.log_params({"form": rel["form"], "features": ",".join(rel["features"]),
                           **{f"coef_{i}": f"{c:.6f}" for i, c in enumerate(rel["coef"])}})
        mlflow.log_metrics({**{f"val_{k}_mean": v["mean"] for k, v in m["baseline_val"].items()},
                            **{f"val_{k}_std": v["std"] for k, v in m["baseline_val"].items()},
                            **{f"oof_{k}": v for k, v in m["baseline_oof"].items()},
                            **{"oof_rmse_" + re.sub(r"[^0-9A-Za-z]+", "_", f).strip("_"): v
                               for f, v in rel["rmse_by_form"].items()}})
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        mlflow.sklearn.log_model(model, name="relation")
        return run.info.run_id


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
    # the sparse copies' sizes: the served stack's bins of epoch counts lie between them
    copy_sizes = tuple(config.section(params, "preprocess").get("augment", {}).get(
        "n_epochs", ()))
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
        m, table, figs = summarise(kind, data, results[kind], n_repeats, figures_dir,
                                   copy_sizes, bool(c.get("own_curves_line", True)))
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
            flat.update({f"relation_oof_{k}": v for k, v in m["baseline_oof"].items()})
            flat.update({f"served_oof_{k}": v for k, v in m["stack"]["oof"].items()})
            mlflow.log_metrics({**flat, "best_epoch_median": m["best_epoch_median"],
                                "stack_weight": m["stack"]["weight"],
                                **{f"served_oof_rmse_bin{i}": e["oof_rmse"]
                                   for i, e in enumerate(m["stack"]["bins"])}})
            mlflow.set_tags({"served": m["stack"]["served"],
                             "served_reason": m["stack"]["reason"]})
            for f in figs:
                mlflow.log_artifact(str(f), artifact_path="figures")
            mlflow.log_artifact(str(dest / "predictions.parquet"))
        log_relation(kind, data, processed_dir / f"{kind}.npz", m, experiment_id, parent_id,
                     root)
        metrics[kind] = m
        log.info("%s: served %s (%s)", kind, m["stack"]["served"], m["stack"]["reason"])
        log.info("%s: validation R2 %.3f ± %.3f, RMSE %.3f ± %.3f, wRMSE %.3f ± %.3f (%s: R2 %.3f, "
                 "RMSE %.3f)", kind,
                 m["val"]["r2"]["mean"], m["val"]["r2"]["std"], m["val"]["rmse"]["mean"],
                 m["val"]["rmse"]["std"], m["val"]["wrmse"]["mean"], m["val"]["wrmse"]["std"],
                 m["relation"]["form"], m["baseline_val"]["r2"]["mean"],
                 m["baseline_val"]["rmse"]["mean"])
    write_json(metrics, metrics_path)
