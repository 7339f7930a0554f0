"""Stage `tune`: Hyperband search per RR Lyrae type; every trial a nested MLflow run.

Each type is searched on a stratified train/validation split (paper: 80/20) of its training
stars (the test split of `preprocess` is never loaded here) with the KDE weights in the
loss; the types run at once on separate cores. The best network of each type goes to
models/best_hparams.json, which the `crossval` stage reads. A stopped search resumes from its
keras-tuner folder (data/cache/tune/<type>-<hash of the search>) under the same MLflow parent run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrlfeh.data import schema
from rrlfeh.io import write_json
from rrlfeh.training.tracking import TrackingSettings, file_md5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneJob:
    """One type's search (picklable, for a worker process)."""

    kind: str
    data_path: str
    base: dict[str, Any]
    space: dict[str, Any]
    hyperband: dict[str, Any]
    validation_fraction: float
    seed: int
    deterministic: bool
    search_dir: str
    tracking: TrackingSettings
    root: str
    logged_params: dict[str, Any]
    objective_window: int = 1


def code_digest() -> str:
    """md5 of the training code: a checkpoint made by other code is not resumed."""
    from rrlfeh import training

    h = hashlib.md5()
    for f in sorted(Path(training.__file__).parent.glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def config_hash(*parts: Any) -> str:
    """Short hash of JSON-able settings: a changed setting starts a new search, not a resume."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def tune_one(job: TuneJob) -> dict[str, Any]:
    """Run (or resume) one type's Hyperband search; returns its best network and scores."""
    import mlflow

    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.callbacks import nan_guard
    from rrlfeh.training.hyperband import GRUHyperModel, TrackedHyperband, hyperband_budget
    from rrlfeh.training.model import NetworkSpec
    from rrlfeh.training.runner import seed_everything
    from rrlfeh.training.tracking import git_tags, setup_tracking, stage_run
    from rrlfeh.weights import stratified_split

    t0 = time.monotonic()
    seed_everything(job.seed, job.deterministic)
    # the search runs on the stars' own curves (sparse copies would multiply its cost; crossval
    # trains the chosen network on them)
    data = load_training_set(job.data_path, job.kind).originals()
    tr_idx, va_idx = stratified_split(data.strata, job.validation_fraction, job.seed)
    tr, va = data.subset(tr_idx), data.subset(va_idx)
    hypermodel = GRUHyperModel(data.input_shape, NetworkSpec.from_params(job.base), job.space)
    hb = job.hyperband
    trials, epochs = hyperband_budget(int(hb["max_epochs"]), int(hb["factor"]),
                                      int(hb.get("iterations", 1)))
    search_dir = Path(job.search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    parent_file = search_dir / "mlflow_parent_run_id"
    resume_id = parent_file.read_text().strip() if parent_file.exists() else None
    setup_tracking(job.tracking)
    log.info("%s: Hyperband on %d train / %d validation curves, about %d trials and %d epochs%s",
             job.kind, len(tr), len(va), trials, epochs, " (resumed)" if resume_id else "")
    with stage_run(f"tune {job.kind}", stage="tune", root=Path(job.root),
                   params=job.logged_params, run_id=resume_id,
                   tags={"rr_type": job.kind, "search": "hyperband"},
                   inputs=[job.data_path]) as run:
        parent_file.write_text(run.info.run_id)
        if resume_id is None:
            mlflow.log_params({"rr_type": job.kind, "n_train": len(tr), "n_val": len(va),
                               "expected_trials": trials, "expected_epochs": epochs})
        tuner = TrackedHyperband(
            hypermodel, label=job.kind, y_val=va.y, expected_trials=trials,
            tags=git_tags(Path(job.root)), objective_window=job.objective_window,
            inputs=(str(job.data_path),),
            objective="val_loss", max_epochs=int(hb["max_epochs"]), factor=int(hb["factor"]),
            hyperband_iterations=int(hb.get("iterations", 1)), seed=job.seed,
            directory=str(search_dir), project_name="keras_tuner", overwrite=False)
        tuner.search(tr.X, tr.y, sample_weight=tr.weights, validation_data=(va.X, va.y, va.weights),
                     callbacks=[nan_guard()], verbose=0)
        best_hp = tuner.get_best_hyperparameters(1)[0]
        best_trial = tuner.oracle.get_best_trials(1)[0]
        spec = hypermodel.spec(best_hp)
        best = {"network": spec.as_dict(), "trial_id": best_trial.trial_id,
                "val_loss": float(best_trial.score),
                "epochs": int(best_hp.values.get("tuner/epochs", hb["max_epochs"]))}
        for key in ("val_rmse", "val_wrmse", "val_mae", "val_wmae"):
            if best_trial.metrics.exists(key):
                best[key] = float(best_trial.metrics.get_best_value(key))
        if "val_rmse" in best and np.var(va.y) > 0:
            best["val_r2"] = 1.0 - best["val_rmse"] ** 2 / float(np.var(va.y))
        n_done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
        best.update(n_trials=n_done, n_train=len(tr), n_val=len(va),
                    mlflow_run_id=run.info.run_id, seconds=time.monotonic() - t0)
        mlflow.log_params({f"best.{k}": v for k, v in spec.as_dict().items()})
        mlflow.log_metrics({"n_trials": n_done,
                            **{f"best_{k}": v for k, v in best.items()
                               if k.startswith("val_")}})
        mlflow.log_dict(best, f"best_hparams_{job.kind}.json")
    log.info("%s: %d trials, best %s val_loss %.4f (%.0f s)", job.kind, n_done,
             best_trial.trial_id, best["val_loss"], time.monotonic() - t0)
    return {"kind": job.kind, **best}


def run(processed_dir: Path, params: Mapping[str, Any], root: Path, metrics_path: Path) -> None:
    """Search every type with enough stars; write models/best_hparams.json and the tune metrics."""
    from rrlfeh import config
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.runner import run_jobs
    from rrlfeh.training.tracking import setup_tracking

    if not any((processed_dir / f"{kind}.npz").exists() for kind in schema.TYPES):
        raise FileNotFoundError(
            f"{processed_dir}: no <type>.npz training arrays (run `rrlfeh preprocess` first; "
            "relative paths in params are taken from the params file's folder)")
    t = config.section(params, "tune")
    budget = config.training_budget(params)
    tracking = TrackingSettings.from_params(config.section(params, "tracking"), root)
    setup_tracking(tracking)  # the experiment exists before workers race to create it
    base = dict(config.section(params, "model"))
    out: dict[str, Any] = {}
    jobs = []
    for kind in schema.TYPES:
        path = processed_dir / f"{kind}.npz"
        # training stars (their own curves: sparse copies are no more stars)
        n = len(load_training_set(path, kind).originals()) if path.exists() else 0
        if n < int(t["min_stars"]):
            why = f"{n} stars < tune.min_stars {t['min_stars']}"
            out[kind] = {"skipped": why if path.exists() else f"no {path}: {why}"}
            log.warning("%s: not tuned, %s", kind, out[kind]["skipped"])
            continue
        settings = [base, dict(t["space"]), dict(budget["tune"]), t["validation_fraction"],
                    t["seed"], t.get("objective_window", 1), file_md5(path), code_digest()]
        jobs.append(TuneJob(
            kind=kind, data_path=str(path), base=base,
            space={k: list(v) for k, v in t["space"].items()}, hyperband=dict(budget["tune"]),
            validation_fraction=float(t["validation_fraction"]), seed=int(t["seed"]),
            deterministic=bool(t.get("deterministic", True)),
            search_dir=str(root / t["cache_dir"] / f"{kind}-{config_hash(*settings)}"),
            tracking=tracking, root=str(root),
            objective_window=int(t.get("objective_window", 1)),
            logged_params={"model": base, "tune": dict(t), "budget": dict(budget)}))
    for result in run_jobs(tune_one, jobs, int(t.get("workers", 0))):
        out[result.pop("kind")] = result
    write_json({k: out[k] for k in schema.TYPES if k in out}, root / t["out"])
    write_json({k: ({m: v[m] for m in ("val_loss", "val_r2", "val_rmse", "val_wrmse", "n_trials")
                     if m in v} if "skipped" not in v else {"skipped": v["skipped"]})
                for k, v in out.items()}, metrics_path)
