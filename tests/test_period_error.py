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


def test_held_out_coverage_judges_each_half_with_the_other_halfs_scatter():
    """Gaussian residuals of one scale: ~68 % / ~95 % on the held-out halves. Stars whose
    residuals are 3x larger than the others': neither half can hold 68 % with the other
    half's scatter, which an in-sample calibration would hide."""
    from rrlfeh.stages.train import held_out_coverage

    rng = np.random.default_rng(5)
    star = np.repeat(np.arange(400), 5)  # 5 copies a star, all on one side
    res = rng.normal(0, 0.1, star.size)
    got = held_out_coverage(res, np.zeros(star.size), np.zeros(star.size, int), star, 1, seed=0)
    assert abs(got[0]["within_1sigma"] - 0.683) < 0.04 and got[0]["n"] == star.size
    assert abs(got[0]["within_2sigma"] - 0.954) < 0.03
    # the halves the function draws, rebuilt here: one half's residuals 3x the other's
    ids = np.random.default_rng(0).permutation(np.arange(400))[:200]
    wide = np.isin(star, ids)
    res = np.where(wide, 3, 1) * rng.normal(0, 0.1, star.size)
    got = held_out_coverage(res, np.zeros(star.size), np.zeros(star.size, int), star, 1, seed=0)
    # narrow half judged by a ~0.3 scatter (~100 % inside), wide half by ~0.1 (~26 %)
    assert abs(got[0]["within_1sigma"] - (1.0 + 0.26) / 2) < 0.05


def test_held_out_derived_coverage_judges_each_half_with_the_other_halfs_scatter():
    """Residuals N(0, 0.1) and shifts N(0, 0.2), the same law for every star: ~68 % / ~95 %
    on the held-out halves. Shifts 3x larger for the stars of one half: the other half's
    scatter cannot cover them, which a calibration on all stars would hide."""
    from rrlfeh.training.period_error import held_out_derived_coverage

    rng = np.random.default_rng(8)
    star = np.repeat(np.arange(300), 3)
    res = rng.normal(0, 0.1, star.size)
    shift_star = np.repeat(np.arange(300), 2)
    delta = rng.normal(0, 0.2, shift_star.size)
    frame = shifts_frame(delta, np.full(shift_star.size, 15))
    frame["source_id"] = shift_star
    zeros, bins = np.zeros(star.size), np.zeros(star.size, int)
    got = held_out_derived_coverage(res, zeros, bins, star, frame, [0, 100], seed=0,
                                    held_seed=1)
    assert abs(got[0]["within_1sigma"] - 0.683) < 0.04
    assert abs(got[0]["within_2sigma"] - 0.954) < 0.03
    # the halves the function draws, rebuilt here: one half's shifts 3x the other's
    first = np.random.default_rng(1).permutation(np.arange(300))[:150]
    frame["shift"] = np.where(np.isin(shift_star, first), 3.0, 1.0) * delta
    got = held_out_derived_coverage(res, zeros, bins, star, frame, [0, 100], seed=0,
                                    held_seed=1)
    # narrow half judged by a ~0.6 scatter (~100 % within ±2), wide half by ~0.22 (~53 %)
    assert abs(got[0]["within_2sigma"] - (1.0 + 0.53) / 2) < 0.06, got
