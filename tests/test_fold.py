"""Phase folding and the ragged-array helpers."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.preprocess.fold import (
    count_adjacent_equal,
    fold_phase,
    max_phase_gap,
    offsets_from_sorted,
    sort_by_star_phase,
    star_index,
    wrap_phase,
)


def test_fold_phase_known_values():
    period, epoch = 0.5, 100.0
    time = np.array([100.0, 100.25, 100.5, 99.9, 1100.125, 100.0 - 1e-13])
    phase = fold_phase(time, epoch, period)
    np.testing.assert_allclose(phase[:5], [0.0, 0.5, 0.0, 0.8, 0.25], atol=1e-9)
    assert 0.0 <= phase[5] < 1.0          # rounding just below a maximum never gives 1.0


def test_fold_phase_per_epoch_periods_and_bad_inputs():
    time = np.array([1.0, 1.0, 1.0, np.nan, 1.0])
    period = np.array([0.4, 0.3, 0.0, 0.4, -1.0])
    phase = fold_phase(time, 0.0, period)
    np.testing.assert_allclose(phase[:2], [0.5, 1.0 / 3.0])
    assert np.isnan(phase[2:]).all()


def test_wrap_phase():
    np.testing.assert_allclose(wrap_phase(np.array([1.0, 1.25, -0.25, 0.5])), [0, 0.25, 0.75, 0.5])


def test_star_index_unknown_and_repeated():
    idx = star_index(np.array([7, 3, 9, 3]), np.array([3, 7]))
    assert idx.tolist() == [1, 0, -1, 0]
    with pytest.raises(ValueError, match="repeated"):
        star_index(np.array([1]), np.array([1, 2, 1]))


def test_sort_offsets_gap_and_duplicates():
    star = np.array([1, 0, 1, 0, 1, 1])
    phase = np.array([0.9, 0.5, 0.1, 0.2, 0.1, 0.5])
    time = np.array([5.0, 1.0, 2.0, 3.0, 2.0, 9.0])
    order = sort_by_star_phase(star, phase, time)
    assert star[order].tolist() == [0, 0, 1, 1, 1, 1]
    assert phase[order].tolist() == [0.2, 0.5, 0.1, 0.1, 0.5, 0.9]
    offsets = offsets_from_sorted(star[order], 3)
    assert offsets.tolist() == [0, 2, 6, 6]
    # star 0: gaps 0.3 inside, 0.7 across the wrap; star 1: 0.4 inside, 0.2 across; star 2 empty
    np.testing.assert_allclose(max_phase_gap(phase[order], offsets), [0.7, 0.4, 1.0])
    assert count_adjacent_equal(time[order], offsets).tolist() == [0, 1, 0]
