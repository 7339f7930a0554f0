"""Callbacks of the training loops: the wall-time budget stops a fit, keeping the best weights."""

from __future__ import annotations

import keras
import numpy as np

from rrlfeh.training.callbacks import TimeBudget
from rrlfeh.training.model import NetworkSpec, build_model


def _fit(callbacks, epochs=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 12, 2)).astype("float32")
    y = rng.normal(size=32).astype("float32")
    model = build_model((12, 2), NetworkSpec(units=(3, 2, 2), batch_size=16))
    return model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, validation_data=(x, y),
                     callbacks=callbacks)


def test_time_budget_stops_after_the_first_epoch_past_it():
    clock = TimeBudget(0.0)
    hist = _fit([clock])
    assert clock.stopped and len(hist.history["loss"]) == 1


def test_no_budget_runs_every_epoch():
    clock = TimeBudget(None)
    hist = _fit([clock, keras.callbacks.EarlyStopping(patience=100)])
    assert not clock.stopped and len(hist.history["loss"]) == 4
