"""feh_std of stars scored without a period (rrlfeh.training.period_error)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrlfeh.training.period_error import MIN_SHIFTS, derived_sigmas


def shifts_frame(delta: np.ndarray, n_epochs: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"source_id": np.arange(len(delta)), "cut": "15", "type": "RRab",
                         "n_epochs": n_epochs.astype(float), "shift": delta})


def test_gaussian_residuals_and_shifts_add_in_quadrature():
    """Residuals N(0, 0.10) and shifts N(0, 0.20), independent: the residual of a derived
    period is N(0, sqrt(0.10² + 0.20²)), so its scatter is ~0.224 and ±1σ holds ~68 %."""
    rng = np.random.default_rng(1)
    res = rng.normal(0, 0.10, 800)
    delta = rng.normal(0, 0.20, 600)
    sig, within, counts = derived_sigmas(res, np.zeros(800), np.zeros(800, int),
                                         shifts_frame(delta, np.full(600, 15)), [0, 100],
                                         [0.10], seed=0)
    assert counts == [600]
    assert abs(sig[0] - np.hypot(0.10, 0.20)) < 0.015
    # an independent check: fresh draws of the same two errors fall inside ±1σ ~68 % of the time
    fresh = rng.normal(0, 0.10, 20000) + rng.normal(0, 0.20, 20000)
    assert abs(np.mean(np.abs(fresh) <= sig[0]) - 0.683) < 0.03
    assert abs(within[0] - 0.683) <= 0.031


def test_bins_without_enough_shifts_keep_the_scatter_with_the_period():
    rng = np.random.default_rng(2)
    res = rng.normal(0, 0.1, 400)
    bins = np.repeat([0, 1], 200)
    n = np.concatenate([np.full(MIN_SHIFTS - 1, 15), np.full(300, 60)])
    delta = np.concatenate([rng.normal(0, 1.0, MIN_SHIFTS - 1), np.zeros(300)])
    sig, within, counts = derived_sigmas(res, np.zeros(400), bins, shifts_frame(delta, n),
                                         [0, 30, 100], [0.1, 0.1], seed=0)
    assert counts == [MIN_SHIFTS - 1, 300]
    assert sig[0] == 0.1 and within[0] is None  # too few shifts: unchanged
    # zero shifts (the period found every time): never below the scatter with the period
    assert sig[1] >= 0.1


def test_unscored_shifts_are_left_out():
    rng = np.random.default_rng(3)
    delta = rng.normal(0, 0.3, 100)
    delta[::2] = np.nan  # not scored without a period
    _, _, counts = derived_sigmas(rng.normal(0, 0.1, 100), np.zeros(100), np.zeros(100, int),
                                  shifts_frame(delta, np.full(100, 20)), [0, 100], [0.1], seed=0)
    assert counts == [50]
