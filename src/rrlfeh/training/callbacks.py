"""Keras callbacks of the training loops: progress lines in the log for long fits."""

from __future__ import annotations

import logging
import time

import keras

log = logging.getLogger(__name__)


class ProgressLog(keras.callbacks.Callback):
    """A log line every `every` epochs (and at the last) with the losses, so long fits show life."""

    def __init__(self, label: str, every: int = 10) -> None:
        super().__init__()
        self.label, self.every = label, max(1, int(every))
        self._t0 = time.monotonic()

    def on_train_begin(self, logs=None) -> None:
        self._t0 = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if (epoch + 1) % self.every:
            return
        logs = logs or {}
        shown = " ".join(f"{k} {v:.4f}" for k, v in logs.items() if k.endswith("loss"))
        log.info("%s epoch %d: %s (%.0f s)", self.label, epoch + 1, shown,
                 time.monotonic() - self._t0)


def nan_guard():
    """Stop a fit whose loss went NaN (a diverging learning rate) instead of running on."""
    return keras.callbacks.TerminateOnNaN()


class TimeBudget(keras.callbacks.Callback):
    """Stop a fit at the end of the first epoch past `seconds` of wall time (a budget of the
    default profile; early stopping still restores the best epoch's weights)."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.seconds = seconds
        self.stopped = False
        self._t0 = time.monotonic()

    def on_train_begin(self, logs=None) -> None:
        self._t0 = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.seconds is not None and time.monotonic() - self._t0 > self.seconds:
            self.stopped = True
            self.model.stop_training = True
