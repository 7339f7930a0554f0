"""feh_std of stars scored without a period (rrlfeh.training.period_error)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrlfeh.training.period_error import MIN_SHIFTS, calibration_subsets, derived_sigmas


def test_gaussian_residuals_and_shifts_add_in_quadrature():
    """Residuals N(0, 0.10) and shifts N(0, 0.20), independent: the residual of a derived
    period is N(0, sqrt(0.10² + 0.20²)), so its scatter is ~0.224 and ±1σ holds ~68 %."""
    rng = np.random.default_rng(1)
    res = rng.normal(0, 0.10, 800)
    delta = rng.normal(0, 0.20, 800)
    sig, within, counts = derived_sigmas(res, np.zeros(800), np.zeros(800, int), delta, [0.10])
    assert counts == [800]
    assert abs(sig[0] - np.hypot(0.10, 0.20)) < 0.015
    # an independent check: fresh draws of the same two errors fall inside ±1σ ~68 % of the time
    fresh = rng.normal(0, 0.10, 20000) + rng.normal(0, 0.20, 20000)
    assert abs(np.mean(np.abs(fresh) <= sig[0]) - 0.683) < 0.03
    assert abs(within[0] - 0.683) <= 0.031


def test_each_curve_keeps_its_own_residual_and_shift():
    """Noisy curves have both a large residual and a large shift, clean ones neither: the
    scatter holds 68 % of the curves' own sums (checked on fresh curves of the same kind),
    narrower than residuals and shifts of different curves would need."""
    rng = np.random.default_rng(4)

    def curves(n):
        noisy = rng.random(n) < 0.3
        res = np.where(noisy, rng.normal(0, 0.30, n), rng.normal(0, 0.05, n))
        return res, np.where(noisy, rng.normal(0, 0.30, n), 0.0)

    res, delta = curves(3000)
    sig, within, _ = derived_sigmas(res, np.zeros(res.size), np.zeros(res.size, int), delta,
                                    [0.05])
    fresh_res, fresh_delta = curves(50000)
    assert abs(np.mean(np.abs(fresh_res + fresh_delta) <= sig[0]) - 0.683) < 0.03
    mixed = np.abs(fresh_res + rng.permutation(fresh_delta))  # shifts of other curves
    assert sig[0] < 0.8 * np.quantile(mixed, 0.683)


def test_bins_without_enough_shifts_keep_the_scatter_with_the_period():
    rng = np.random.default_rng(2)
    res = rng.normal(0, 0.1, 400)
    bins = np.repeat([0, 1], 200)
    delta = np.concatenate([rng.normal(0, 1.0, 200), np.zeros(200)])
    delta[MIN_SHIFTS - 1:200] = np.nan  # bin 0: one shift too few scored
    sig, within, counts = derived_sigmas(res, np.zeros(400), bins, delta, [0.1, 0.1])
    assert counts == [MIN_SHIFTS - 1, 200]
    assert sig[0] == 0.1 and within[0] is None  # too few shifts: unchanged
    # zero shifts (the period found every time): never below the scatter with the period
    assert sig[1] >= 0.1


def test_unscored_curves_are_left_out():
    """A curve the period search refuses is left out with its residual: huge residuals on
    exactly those curves do not widen the scatter."""
    rng = np.random.default_rng(3)
    res, delta = rng.normal(0, 0.1, 400), rng.normal(0, 0.1, 400)
    delta[::2] = np.nan  # not scored without a period
    res[::2] = 5.0
    sig, _, counts = derived_sigmas(res, np.zeros(400), np.zeros(400, int), delta, [0.1])
    assert counts == [200]
    assert sig[0] < 0.2


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
    delta = rng.normal(0, 0.2, star.size)
    zeros, bins = np.zeros(star.size), np.zeros(star.size, int)
    got = held_out_derived_coverage(res, zeros, bins, star, delta, 1, held_seed=1)
    assert abs(got[0]["within_1sigma"] - 0.683) < 0.04 and got[0]["n"] == star.size
    assert abs(got[0]["within_2sigma"] - 0.954) < 0.03
    # the halves the function draws, rebuilt here: one half's shifts 3x the other's
    first = np.random.default_rng(1).permutation(np.arange(300))[:150]
    wide = np.where(np.isin(star, first), 3.0, 1.0) * delta
    got = held_out_derived_coverage(res, zeros, bins, star, wide, 1, held_seed=1)
    # narrow half judged by a ~0.6 scatter (~100 % within ±2), wide half by ~0.22 (~53 %)
    assert abs(got[0]["within_2sigma"] - (1.0 + 0.53) / 2) < 0.06, got


def test_calibration_subsets_are_the_calibration_curves_themselves():
    """Row i of the calibration is subset i: an own curve is its star's clean epochs, a copy
    is exactly the epochs preprocess kept for it; a row whose epochs are gone is left out."""
    times = {1: np.arange(60.0), 2: np.arange(55.0) + 0.5}
    epochs = pd.concat([pd.DataFrame({"source_id": sid, "transit_id": 1000 * sid + np.arange(
        t.size), "time": t, "mag": 15 + 0.1 * np.sin(t), "rejected": np.arange(t.size) % 10 == 0})
        for sid, t in times.items()], ignore_index=True)
    pick = {(1, 1): [3, 8, 13, 17, 21], (1, 2): [2, 4, 6], (2, 1): [5, 9, 33, 44]}
    copies = pd.concat([epochs[(epochs["source_id"] == s)].iloc[idx].assign(copy=k)
                        for (s, k), idx in pick.items()], ignore_index=True)
    star = np.array([1, 2, 1, 2, 1, 2])
    copy = np.array([1, 1, 0, 0, 2, 3])  # (2, 3): no such copy
    subsets, chosen = calibration_subsets(star, copy, copies, epochs)
    assert subsets["subset_id"].tolist() == [0, 1, 2, 3, 4]
    assert subsets["cut"].tolist() == ["5", "4", "full", "full", "3"]
    assert subsets["n_epochs"].tolist() == [5, 4, 54, 49, 3]
    for row in subsets.itertuples():
        got = chosen.loc[chosen["subset_id"] == row.subset_id, "transit_id"].to_numpy()
        mine = epochs[epochs["source_id"] == row.source_id]
        want = (mine.loc[~mine["rejected"], "transit_id"].to_numpy() if row.cut == "full"
                else mine["transit_id"].to_numpy()[pick[(row.source_id, row.draw)]])
        assert np.array_equal(got, want)
    assert list(chosen.columns) == ["subset_id", *epochs.columns]
    assert not chosen["rejected"].any()
    # no copies made (augment.copies 0: preprocess writes only the key columns): own curves
    none = pd.DataFrame({"source_id": np.zeros(0, np.int64), "copy": np.zeros(0, np.int64)})
    subsets, chosen = calibration_subsets(star, copy, none, epochs)
    assert subsets["cut"].tolist() == ["full", "full"]
    assert subsets["subset_id"].tolist() == [2, 3]
