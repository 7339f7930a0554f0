"""Repeated stratified K-fold: the folds, and the fit of one fold as a self-contained job.

A fold job trains the network on its training part with early stopping on an inner stratified
split of that part (never on the fold's validation stars, whose metrics are reported), logs
itself as an MLflow run nested under the type's K-fold run (hyperparameters, per-epoch learning
curves, train and validation metrics) and saves its model and result in a checkpoint folder. A
job whose result is already there is not run again, so a stopped K-fold resumes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold

from rrlfeh.io import atomic_path
from rrlfeh.training.metrics import regression_metrics
from rrlfeh.training.tracking import TrackingSettings
from rrlfeh.weights import stratified_split

if TYPE_CHECKING:
    from rrlfeh.training.arrays import TrainingSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSettings:
    """Early stopping and the epoch cap of one fit."""

    max_epochs: int = 100
    patience: int = 10
    min_delta: float = 1e-5
    progress_every: int = 10
    deterministic: bool = True
    max_seconds: float | None = None  # wall-time cap of one fit (None: no cap)
    stop_fraction: float = 0.15       # inner split of the fold's training stars for stopping

    @classmethod
    def from_params(cls, c: Mapping[str, Any], budget: Mapping[str, Any]) -> FitSettings:
        """From params.yaml `crossval` (min_delta, stop_fraction, ...) and a budget's
        `crossval` block (max_epochs, patience, optional max_fit_seconds)."""
        return cls(max_epochs=int(budget["max_epochs"]), patience=int(budget["patience"]),
                   min_delta=float(c.get("min_delta", 1e-5)),
                   progress_every=int(c.get("progress_every", 10)),
                   deterministic=bool(c.get("deterministic", True)),
                   max_seconds=(float(budget["max_fit_seconds"])
                                if budget.get("max_fit_seconds") else None),
                   stop_fraction=float(c.get("stop_fraction", 0.15)))


def first_channels(data: TrainingSet, n: int | None) -> TrainingSet:
    """`data` with only the first `n` input channels of X (None: all of them), e.g. the paper's
    two (standardised magnitude, phase x period) out of the champion's wider input."""
    if n is None or n == data.X.shape[-1]:
        return data
    if not 1 <= n <= data.X.shape[-1]:
        raise ValueError(f"{n} channels asked of curves with {data.X.shape[-1]} "
                         f"({', '.join(data.channels)})")
    return replace(data, X=np.ascontiguousarray(data.X[..., :n]), channels=data.channels[:n])


def stratified_folds(strata: np.ndarray, n_splits: int, n_repeats: int,
                     seed: int) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(repeat, fold, train index, validation index), repeats and folds counted from 1; each
    validation part holds each [Fe/H] stratum in the same proportion as the whole set."""
    strata = np.asarray(strata)
    counts = np.bincount(strata - strata.min()) if len(strata) else np.array([])
    if len(strata) < n_splits or counts[counts > 0].min(initial=n_splits) < n_splits:
        raise ValueError(f"stratified {n_splits}-fold needs at least {n_splits} stars in every "
                         f"[Fe/H] stratum; counts {counts.tolist()} (lower preprocess.strata."
                         "n_bins or crossval.n_splits)")
    rskf = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    out = []
    for i, (tr, va) in enumerate(rskf.split(np.zeros(len(strata)), strata)):
        out.append((i // n_splits + 1, i % n_splits + 1, tr, va))
    return out


def _rows_of(data: TrainingSet, star_ids: np.ndarray, originals_only: bool) -> np.ndarray:
    """Row indices of the stars `star_ids` in `data`: their own curves and their sparse copies
    (only their own curves with `originals_only`)."""
    rows = np.isin(data.source_id, star_ids)
    return np.flatnonzero(rows & ~data.is_copy if originals_only else rows)


def star_folds(data: TrainingSet, n_splits: int, n_repeats: int, seed: int, *,
               originals_only: bool = False) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """`stratified_folds` of the stars (their own curves), each star's sparse copies in its
    star's part: a copy never sits on the other side of a fold from its star. Indices are rows
    of `data`; without copies the folds are exactly `stratified_folds(data.strata, ...)`."""
    own = np.flatnonzero(~data.is_copy)
    folds = stratified_folds(data.strata[own], n_splits, n_repeats, seed)
    if not data.is_copy.any():
        return folds
    ids = data.source_id[own]
    return [(r, k, _rows_of(data, ids[tr], originals_only), _rows_of(data, ids[va], originals_only))
            for r, k, tr, va in folds]


def split_by_star(data: TrainingSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`stratified_split` of the stars, each star's copies with it (rows of `data`)."""
    own = np.flatnonzero(~data.is_copy)
    tr, va = stratified_split(data.strata[own], fraction, seed)
    if not data.is_copy.any():
        return tr, va
    ids = data.source_id[own]
    return _rows_of(data, ids[tr], False), _rows_of(data, ids[va], False)


@dataclass(frozen=True)
class FoldJob:
    """Everything a worker needs to fit one fold (picklable)."""

    kind: str
    data_path: str
    repeat: int
    fold: int
    train_index: np.ndarray
    val_index: np.ndarray
    spec: dict[str, Any]
    fit: FitSettings
    seed: int
    checkpoint_dir: str
    tracking: TrackingSettings
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str] | None = None  # e.g. the git commit, on every fold run
    n_channels: int | None = None       # fit on the first n channels of X only (None: all)
    max_copy: int | None = None         # the network fits its stars' copies 1..max_copy only
                                        #   (None: all); every copy is still predicted

    @property
    def name(self) -> str:
        return f"r{self.repeat}_k{self.fold}"

    @property
    def stem(self) -> str:
        """File name of the fold's checkpoint: its name, and the channels when a subset (a fold
        on fewer channels is another fit, never a cached one of all channels)."""
        return self.name if self.n_channels is None else f"{self.name}_c{self.n_channels}"

    @property
    def result_path(self) -> Path:
        return Path(self.checkpoint_dir) / f"{self.stem}.json"

    @property
    def model_path(self) -> Path:
        return Path(self.checkpoint_dir) / f"{self.stem}.keras"


def load_result(job: FoldJob) -> dict[str, Any] | None:
    """The saved result of a finished fold (with its model), or None."""
    if job.result_path.exists() and job.model_path.exists():
        return json.loads(job.result_path.read_text())
    return None


def fit_fold(job: FoldJob) -> dict[str, Any]:
    """Fit one fold (or return its saved result): metrics, history, predictions, MLflow run id."""
    done = load_result(job)
    if done is not None:
        log.info("%s fold %s: already done (run %s), reused", job.kind, job.name,
                 done["run_id"])
        return done
    import keras
    import mlflow

    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.callbacks import ProgressLog, TimeBudget, nan_guard
    from rrlfeh.training.model import NetworkSpec, build_model, predict, warm_start
    from rrlfeh.training.runner import seed_everything
    from rrlfeh.training.tracking import flatten, log_data_inputs, log_history

    t0 = time.monotonic()
    seed_everything(job.seed, job.fit.deterministic)
    data = first_channels(load_training_set(job.data_path, job.kind), job.n_channels)
    tr, va = data.subset(job.train_index), data.subset(job.val_index)
    fits = tr if job.max_copy is None or tr.copy is None else tr.subset(
        np.flatnonzero(tr.copy <= job.max_copy))
    fit_idx, stop_idx = split_by_star(fits, job.fit.stop_fraction, job.seed)
    fit_part, stop_on = fits.subset(fit_idx), fits.subset(stop_idx)
    spec = NetworkSpec.from_params(job.spec)
    mlflow.set_tracking_uri(job.tracking.uri)
    label = f"{job.kind} {job.name}"
    tags = {"mlflow.parentRunId": job.parent_run_id, "rr_type": job.kind,
            "repeat": str(job.repeat), "fold": str(job.fold), "dvc.stage": "crossval",
            **(job.tags or {})}
    name = f"{job.kind} fold {job.name}"  # the paper's GRU (a channel subset) says so
    name = name if job.n_channels is None else f"paper GRU {name}"
    with mlflow.start_run(experiment_id=job.experiment_id, run_name=name, tags=tags) as run:
        mlflow.log_params({**flatten(spec.as_dict(), "model."), **flatten(asdict(job.fit), "fit."),
                           "repeat": job.repeat, "fold": job.fold, "seed": job.seed,
                           # stars (own curves); the curves the network fits and watches
                           "n_train": int((~tr.is_copy).sum()), "n_val": int((~va.is_copy).sum()),
                           "n_train_copies": int(tr.is_copy.sum()),
                           "n_fit": len(fit_part), "n_stop": len(stop_on),
                           "n_fit_copies": int(fits.is_copy.sum()),
                           "n_channels": data.input_shape[1]})
        log_data_inputs([job.data_path])
        model = build_model(data.input_shape, spec)
        warm_start(model, fit_part.X, fit_part.y, fit_part.weights)  # skip path: at the plane
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=job.fit.patience,
                                             min_delta=job.fit.min_delta,
                                             restore_best_weights=True)
        clock = TimeBudget(job.fit.max_seconds)
        # early stopping watches the inner split: the fold's validation stars stay unseen
        hist = model.fit(fit_part.X, fit_part.y, sample_weight=fit_part.weights,
                         batch_size=spec.batch_size,
                         epochs=job.fit.max_epochs, verbose=0,
                         validation_data=(stop_on.X, stop_on.y, stop_on.weights),
                         callbacks=[stop, clock, nan_guard(),
                                    ProgressLog(label, job.fit.progress_every)])
        # Keras names the early-stopping split's metrics val_*; here they are stop_*, so they
        # cannot be taken for the fold's validation figures (val_* below)
        history = {(f"stop_{k[4:]}" if k.startswith("val_") else k): [float(v) for v in vals]
                   for k, vals in hist.history.items()}
        log_history(history, run_id=run.info.run_id)
        pred_tr, pred_va = predict(model, tr.X), predict(model, va.X)
        if not (np.isfinite(pred_tr).all() and np.isfinite(pred_va).all()):
            raise FloatingPointError(f"{label}: the fit diverged (non-finite predictions); "
                                     "lower the learning rate")
        # Table-1 figures on the stars' own curves; the copies' predictions are kept for the
        # per-epoch-count stack and the uncertainties (crossval)
        own_tr, own_va = ~tr.is_copy, ~va.is_copy
        m_tr = regression_metrics(tr.y[own_tr], pred_tr[own_tr], tr.weights[own_tr])
        m_va = regression_metrics(va.y[own_va], pred_va[own_va], va.weights[own_va])
        val_loss = np.asarray(history["stop_loss"])
        best_epoch = int(np.nanargmin(val_loss)) + 1
        stopped_by = ("time_budget" if clock.stopped else "early_stopping"
                      if len(val_loss) < job.fit.max_epochs else "max_epochs")
        mlflow.set_tag("stopped_by", stopped_by)
        mlflow.log_metrics({**{f"train_{k}": v for k, v in m_tr.items() if k != "n"},
                            **{f"val_{k}": v for k, v in m_va.items() if k != "n"},
                            "best_epoch": best_epoch, "epochs_run": len(val_loss),
                            "fit_seconds": time.monotonic() - t0})
        with atomic_path(job.model_path) as tmp_model:
            model.save(tmp_model)
        result = {
            "kind": job.kind, "repeat": job.repeat, "fold": job.fold, "run_id": run.info.run_id,
            "best_epoch": best_epoch, "epochs_run": len(val_loss), "stopped_by": stopped_by,
            "history": history,
            "metrics_train": m_tr, "metrics_val": m_va, "seconds": time.monotonic() - t0,
            "train_index": job.train_index.tolist(), "val_index": job.val_index.tolist(),
            "pred_train": pred_tr.tolist(), "pred_val": pred_va.tolist(),
        }
        with atomic_path(job.result_path) as tmp:
            tmp.write_text(json.dumps(result))
    log.info("%s: best epoch %d of %d (%s), val R2 %.3f RMSE %.3f wRMSE %.3f (%.0f s)", label,
             best_epoch, len(val_loss), stopped_by, m_va["r2"], m_va["rmse"], m_va["wrmse"],
             time.monotonic() - t0)
    return result
