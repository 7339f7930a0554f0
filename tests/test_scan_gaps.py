"""A folded curve's period from Gaia's scan lags (`rrlfeh.lightcurve.scan_gaps`): recovered from
phases made here from transit times with Gaia's cadence (an independent generator: groups of
transits n spins +- one field of view apart, with the scatter seen on the real DR3 times), not
found in phases without that structure, and used by `preprocess` for folded curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rrlfeh.lightcurve.scan_gaps import scan_gap_period, scan_gap_periods
from rrlfeh.stages.preprocess import folded_periods

FOV_D, SPIN_D = 106.57 / 1440, 360.23 / 1440


def gaia_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """n transit times (d): visits weeks apart over ~3 years, each one to three spins of a
    preceding/following field-of-view pair (one of the pair sometimes missed), 0.02 min jitter."""
    times: list[float] = []
    start = 0.0
    while len(times) < n:
        start += rng.uniform(10.0, 50.0)
        for spin in range(rng.integers(1, 4)):
            t = start + spin * SPIN_D
            times.append(t)
            if rng.random() > 0.2:
                times.append(t + FOV_D)
    t = np.array(times[:n])
    return t + rng.normal(0.0, 0.02 / 1440, t.size)


def folded(rng: np.random.Generator, n: int, period: float) -> np.ndarray:
    return np.mod((gaia_times(rng, n) - rng.uniform(0, 1000)) / period, 1.0)


def test_the_period_is_recovered_from_the_phases_alone():
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.3, 0.9, 120)
    fits = [scan_gap_period(folded(rng, 40, p)) for p in truth]
    found = np.array([f.period for f in fits])
    right = np.abs(found / truth - 1.0) < 1e-3
    accepted = np.array([f.accepted(2.0) for f in fits])
    assert right.mean() >= 0.95
    assert accepted.mean() >= 0.9 and right[accepted].all()


def test_phases_without_the_scan_structure_give_no_period():
    """Uniform random phases: no trial period stands out, so none is accepted (a few by chance
    at most), and fewer than three distinct phases give no period at all."""
    rng = np.random.default_rng(2)
    fits = [scan_gap_period(rng.random(40)) for _ in range(100)]
    assert np.mean([f.accepted(2.0) for f in fits]) <= 0.05
    assert np.isnan(scan_gap_period(np.array([0.1, 0.1, 0.6])).period)


def test_each_star_of_a_long_table_gets_its_period_or_the_reason():
    rng = np.random.default_rng(3)
    good = folded(rng, 50, 0.55)
    noise = rng.random(50)
    table = pd.DataFrame({"source_id": np.repeat([7, 3], 50),
                          "phase": np.concatenate([good, noise])}).sample(frac=1, random_state=0)
    out = scan_gap_periods(table["source_id"].to_numpy(), table["phase"].to_numpy())
    assert set(out["source_id"]) == {3, 7}
    star = out.set_index("source_id")
    assert star.loc[7, "accepted"] and abs(star.loc[7, "period"] / 0.55 - 1) < 1e-3
    assert not star.loc[3, "accepted"] and np.isnan(star.loc[3, "period"])
    assert "scan gaps" in star.loc[3, "reason"]


@pytest.mark.parametrize("needed", [True, False])
def test_preprocess_keeps_given_periods_and_names_the_unclear(needed):
    """Given periods are kept; a model that needs a period gets the scan lags' where clear and
    the other stars rejected with the reason; a shape-only model is left as it was."""
    rng = np.random.default_rng(4)
    curves = pd.DataFrame({"source_id": np.repeat([1, 2, 3], 45),
                           "phase": np.concatenate([folded(rng, 45, 0.62), folded(rng, 45, 0.48),
                                                    rng.random(45)])})
    given = np.array([0.7, np.nan, np.nan])  # star 1's period is given (and kept)
    period, from_gaps, unclear = folded_periods(
        curves, np.array([1, 2, 3]), given, {"enabled": True, "min_z_margin": 2.0}, needed)
    assert period[0] == 0.7 and np.isnan(period[2])
    if needed:
        assert abs(period[1] / 0.48 - 1) < 1e-3 and from_gaps.tolist() == [False, True, False]
        assert unclear["source_id"].tolist() == [3] and "scan gaps" in unclear["reason"].iloc[0]
    else:  # a model of the shape alone: no period looked for, none missed
        assert np.isnan(period[1]) and not from_gaps.any() and unclear.empty


def test_each_type_is_searched_in_its_own_period_range():
    """params' period_range by type: an RRc-like 0.27 d curve is found in RRc's range and,
    outside RRab's, given no (wrong) RRab period."""
    from rrlfeh.lightcurve.scan_gaps import knobs_for

    block = {"enabled": True, "tolerance_min": 0.05, "min_z_margin": 3.0,
             "period_range": {"RRab": [0.3, 1.0], "RRc": [0.2, 0.5]}}
    assert knobs_for(block, "RRab") == {"tolerance_min": 0.05, "min_z_margin": 3.0,
                                        "min_period": 0.3, "max_period": 1.0}
    phase = folded(np.random.default_rng(6), 60, 0.27)
    rrc = scan_gap_periods(np.zeros(60, np.int64), phase, **knobs_for(block, "RRc"))
    rrab = scan_gap_periods(np.zeros(60, np.int64), phase, **knobs_for(block, "RRab"))
    assert rrc["accepted"].iloc[0] and abs(rrc["period"].iloc[0] / 0.27 - 1) < 1e-3
    assert not rrab["accepted"].iloc[0]
