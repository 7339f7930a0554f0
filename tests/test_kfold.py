"""Repeated stratified K-fold: every star validated once a repeat, strata kept in proportion."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.training.kfold import stratified_folds
from rrlfeh.weights import feh_strata


def test_folds_are_stratified_on_feh_bins():
    rng = np.random.default_rng(0)
    feh = np.concatenate([rng.normal(-1.6, 0.3, 400), rng.normal(-0.6, 0.2, 60)])
    strata = feh_strata(feh, n_bins=10, min_per_bin=5)
    k, r = 5, 3
    folds = stratified_folds(strata, n_splits=k, n_repeats=r, seed=1)
    assert len(folds) == k * r
    totals = np.bincount(strata)
    for repeat in range(1, r + 1):
        seen = np.zeros(len(feh), dtype=int)
        for rep, fold, tr, va in folds:
            if rep != repeat:
                continue
            seen[va] += 1
            assert not np.intersect1d(tr, va).size and len(tr) + len(va) == len(feh)
            counts = np.bincount(strata[va], minlength=len(totals))
            # each stratum split as evenly as integers allow: |count - total/K| < 1
            assert np.all(np.abs(counts - totals / k) < 1), (repeat, fold, counts, totals)
        assert np.all(seen == 1)  # every star validated exactly once a repeat
    first = [tuple(va[:5]) for rep, _, _, va in folds if rep == 1]
    second = [tuple(va[:5]) for rep, _, _, va in folds if rep == 2]
    assert first != second  # repeats reshuffle
    assert [(rep, fold) for rep, fold, _, _ in folds][:6] == [
        (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1)]


def test_folds_are_reproducible_from_the_seed():
    strata = np.repeat(np.arange(4), 25)
    a = stratified_folds(strata, 5, 2, seed=7)
    b = stratified_folds(strata, 5, 2, seed=7)
    assert all(np.array_equal(x[3], y[3]) for x, y in zip(a, b, strict=True))


def test_a_stratum_smaller_than_k_is_a_clear_error():
    strata = np.array([0] * 20 + [1] * 3)
    with pytest.raises(ValueError, match="at least 5 stars in every"):
        stratified_folds(strata, n_splits=5, n_repeats=1, seed=0)
