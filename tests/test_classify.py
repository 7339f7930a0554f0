"""Bailey-diagram classification on known (period, amplitude) points."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.lightcurve.classify import bailey_separator, classify_bailey


def test_separator_values() -> None:
    # A(P) = -2.477 - 22.046 log P - 30.876 (log P)^2 - 0.15, by hand at P = 0.35, 0.30, 0.40
    lp = np.log10(0.35)
    assert bailey_separator(0.35) == pytest.approx(-2.477 - 22.046 * lp - 30.876 * lp**2 - 0.15)
    assert bailey_separator(0.40) == pytest.approx(1.2566, abs=1e-3)
    assert bailey_separator(0.30) == pytest.approx(0.4588, abs=1e-3)


@pytest.mark.parametrize(("period", "amplitude", "expected"), [
    (0.55, 0.90, "RRab"),   # typical RRab
    (0.70, 0.30, "RRab"),   # long period, low amplitude: still RRab
    (0.45, 0.20, "RRab"),   # above the split period
    (0.33, 0.45, "RRc"),    # typical RRc, below the curve (0.83 there)
    (0.38, 0.40, "RRc"),
    (0.36, 1.10, "RRab"),   # short-period high-amplitude RRab, above the curve (1.08 there)
    (0.25, 0.40, "RRc"),    # shorter than any RRab
    (0.41, 1.30, "RRab"),
])
def test_known_points(period: float, amplitude: float, expected: str) -> None:
    assert classify_bailey(period, amplitude)[0] == expected


def test_vectorised_and_knobs() -> None:
    p = np.array([0.30, 0.40, 0.50, np.nan, 0.35])
    a = np.array([0.30, 0.50, 0.50, 0.50, -1.0])
    assert classify_bailey(p, a).tolist() == ["RRc", "RRc", "RRab", "", ""]
    # a lower split period turns the 0.40 d star into RRab
    assert classify_bailey(p, a, split_period=0.38).tolist()[1] == "RRab"
    # with no short-period floor the curve alone decides: 0.25 d, 0.4 mag lies above it
    assert classify_bailey(0.25, 0.4, min_rrab_period=0.0)[0] == "RRab"
