"""Hyperband search (keras-tuner) over the paper's space, every trial a nested MLflow run.

The search space maps hyperparameter names to lists of choices (params.yaml `tune.space`):
`units` holds one list of choices a GRU block, `dropout` the choices for every block, and any other
NetworkSpec field (learning_rate, batch_size, kernel_l2, recurrent_l1, ...) its own choices.
Fields not in the space keep the base network's value (params.yaml `model`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner as kt
import numpy as np

from rrlfeh.training.model import NetworkSpec, build_model, warm_start

log = logging.getLogger(__name__)

PER_BLOCK = ("units", "dropout")
BAD_LOSS = 1.0e6  # objective of a diverged trial (NaN loss): ranked last, never chosen


def check_space(space: Mapping[str, Sequence[Any]], base: NetworkSpec) -> None:
    """Every key a NetworkSpec field with a non-empty list of choices; `units` one list a block."""
    known = set(base.as_dict())
    unknown = set(space) - known
    if unknown:
        raise ValueError(f"tune.space: unknown hyperparameters {sorted(unknown)}; "
                         f"known: {sorted(known)}")
    for key, choices in space.items():
        if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
            raise ValueError(f"tune.space.{key}: needs a non-empty list of choices, "
                             f"got {choices!r}")
    if "units" in space and (len(space["units"]) != len(base.units)
                             or any(not isinstance(c, Sequence) or not c
                                    for c in space["units"])):
        raise ValueError(f"tune.space.units: needs one list of choices for each of the "
                         f"{len(base.units)} GRU blocks, got {space['units']!r}")


class GRUHyperModel(kt.HyperModel):
    """The paper's network with hyperparameters drawn from the search space."""

    def __init__(self, input_shape: Sequence[int], base: NetworkSpec,
                 space: Mapping[str, Sequence[Any]]) -> None:
        super().__init__(name="rrl_feh_gru")
        check_space(space, base)
        self.input_shape, self.base, self.space = tuple(input_shape), base, dict(space)

    def spec(self, hp: kt.HyperParameters) -> NetworkSpec:
        """The NetworkSpec of a point of the space (registering its hyperparameters in `hp`)."""
        kw = self.base.as_dict()
        n = len(self.base.units)
        if "units" in self.space:
            kw["units"] = [hp.Choice(f"units_{i + 1}", list(self.space["units"][i]))
                           for i in range(n)]
        if "dropout" in self.space:
            kw["dropout"] = [hp.Choice(f"dropout_{i + 1}", list(self.space["dropout"]))
                             for i in range(n)]
        for key, choices in self.space.items():
            if key not in PER_BLOCK:
                kw[key] = hp.Choice(key, list(choices))
        return NetworkSpec.from_params(kw)

    def build(self, hp: kt.HyperParameters):
        return build_model(self.input_shape, self.spec(hp))

    def fit(self, hp: kt.HyperParameters, model, *args, **kwargs):
        if not hp.values.get("tuner/trial_id"):  # a fresh model, not a parent's continued
            warm_start(model, args[0], args[1], kwargs.get("sample_weight"))
        batch = hp.values.get("batch_size", self.base.batch_size)
        kwargs.setdefault("verbose", 0)
        return model.fit(*args, batch_size=int(batch), **kwargs)


def hyperband_budget(max_epochs: int, factor: int, iterations: int = 1) -> tuple[int, int]:
    """(trials, epochs) of a keras-tuner Hyperband run: its brackets and rounds, where a trial of
    a later round continues its parent's weights (so only the extra epochs count)."""
    n_brackets, e = 0, float(max_epochs)
    while e >= 1:
        e, n_brackets = e / factor, n_brackets + 1
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    trials = epochs = 0
    for b in range(n_brackets - 1, -1, -1):
        previous = 0
        for r in range(b + 1):
            size = math.ceil(end_size / (b + 1) * factor ** (b - r))
            ep = math.ceil(max_epochs / factor ** (b - r))
            trials, epochs = trials + size, epochs + size * (ep - previous)
            previous = ep
    return trials * iterations, epochs * iterations


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and the `window` - 1 before it (fewer at the start): the search ranks
    trials on this, so a single lucky epoch of a noisy fit does not win."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or not len(v):
        return v.tolist()
    c = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(1, len(v) + 1)
    lo = np.maximum(0, i - window)
    return ((c[i] - c[lo]) / (i - lo)).tolist()


class TrackedHyperband(kt.Hyperband):
    """keras-tuner Hyperband whose every trial is an MLflow run nested under the active run, with
    its hyperparameters, per-epoch losses and final validation metrics."""

    def __init__(self, hypermodel: GRUHyperModel, *, label: str, y_val: np.ndarray,
                 expected_trials: int, tags: Mapping[str, str] | None = None,
                 objective_window: int = 1, inputs: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(hypermodel, **kwargs)
        self.label = label
        self.inputs = tuple(inputs)  # data files every trial names (mlflow.log_input)
        self.window = max(1, int(objective_window))
        self.tags = dict(tags or {})
        self._y_var = float(np.var(y_val))
        self._expected = expected_trials
        self._done = 0
        self._t0 = time.monotonic()

    def run_trial(self, trial, *args, **kwargs):
        import mlflow

        from rrlfeh.training.tracking import log_data_inputs, log_history

        hp = dict(trial.hyperparameters.values)
        first = int(hp.get("tuner/initial_epoch", 0))
        with mlflow.start_run(run_name=f"{self.label} trial {trial.trial_id}", nested=True,
                              tags={**self.tags, "trial_id": trial.trial_id,
                                    "rr_type": self.label, "dvc.stage": "tune"}) as run:
            mlflow.log_params({k.replace("tuner/", "tuner."): v for k, v in hp.items()})
            log_data_inputs(self.inputs)
            histories = super().run_trial(trial, *args, **kwargs)
            history = histories[0].history
            log_history({k: [math.nan] * first + list(v) for k, v in history.items()},
                        run_id=run.info.run_id)
            final = self.final_metrics(history)
            raw = [v for v in history.get("val_loss", []) if np.isfinite(v)]
            if raw:
                final["objective"] = float(min(trailing_mean(raw, self.window)))
            mlflow.log_metrics(final)
        for h in histories:  # a diverged trial (NaN) is ranked last, not crashed on
            h.history["val_loss"] = trailing_mean(
                [v if np.isfinite(v) else BAD_LOSS
                 for v in h.history.get("val_loss", [BAD_LOSS])], self.window)
        self._done += 1
        log.info("%s trial %s (%d/%d, epochs %d-%d, batch %s, lr %s): best val_loss %.4f, "
                 "val R2 %.3f [%.0f s]", self.label, trial.trial_id, self._done, self._expected,
                 first + 1, hp.get("tuner/epochs", 0), hp.get("batch_size", "-"),
                 hp.get("learning_rate", "-"), final["best_val_loss"], final["val_r2"],
                 time.monotonic() - self._t0)
        return histories

    def final_metrics(self, history: Mapping[str, Sequence[float]]) -> dict[str, float]:
        """Validation metrics at the trial's best epoch (lowest val_loss); R² from the val RMSE."""
        val = np.asarray(history.get("val_loss", []), dtype=float)
        if not len(val) or not np.isfinite(val).any():
            return {"best_val_loss": BAD_LOSS, "val_r2": -math.inf, "epochs_run": float(len(val))}
        best = int(np.nanargmin(np.where(np.isfinite(val), val, np.nan)))
        out = {"best_val_loss": float(val[best]), "best_epoch": float(best + 1),
               "epochs_run": float(len(val))}
        for key in ("val_rmse", "val_mae", "val_wrmse", "val_wmae", "loss"):
            if key in history:
                out[key] = float(history[key][best])
        rmse = out.get("val_rmse", math.nan)
        out["val_r2"] = 1.0 - rmse**2 / self._y_var if self._y_var > 0 else math.nan
        return out
