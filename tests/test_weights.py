"""KDE sample weights and [Fe/H] strata."""

import numpy as np
import pytest

from rrlfeh.weights import feh_strata, kde_weights


def halo_like(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_halo = int(n * 0.9)
    return np.concatenate([rng.normal(-1.5, 0.3, n_halo), rng.normal(-0.5, 0.3, n - n_halo)])


def test_weights_sum_to_n_and_favour_the_tails():
    y = halo_like(2000)
    w = kde_weights(y)
    assert w.sum() == pytest.approx(len(y))
    peak = np.abs(y + 1.5) < 0.1
    tail = y > -0.3
    assert w[tail].mean() > 3 * w[peak].mean()


def test_weights_flatten_the_weighted_histogram():
    y = halo_like(5000, seed=1)
    w = kde_weights(y, max_ratio=None)
    bins = np.linspace(-2.2, -0.4, 7)
    raw, _ = np.histogram(y, bins)
    weighted, _ = np.histogram(y, bins, weights=w)
    assert np.std(weighted) / np.mean(weighted) < 0.5 * np.std(raw) / np.mean(raw)


def test_weight_cap_limits_the_ratio():
    y = np.append(halo_like(500), 3.0)
    w = kde_weights(y, max_ratio=10.0)
    assert w.max() / w.min() == pytest.approx(10.0, rel=1e-6)


def test_weights_reject_non_finite_labels():
    with pytest.raises(ValueError, match="non-finite"):
        kde_weights(np.array([-1.0, np.nan, -1.2]))


def test_strata_are_balanced_and_filled():
    y = halo_like(1000)
    s = feh_strata(y, n_bins=10, min_per_bin=5)
    counts = np.bincount(s)
    assert counts.min() >= 5 and len(counts) >= 8
    # strata are ordered in [Fe/H]
    means = [y[s == k].mean() for k in range(len(counts))]
    assert np.all(np.diff(means) > 0)


def test_sparse_strata_are_merged():
    y = np.concatenate([np.full(40, -1.5), [-3.0, -2.9, 0.2]])
    s = feh_strata(y, n_bins=10, min_per_bin=5)
    assert np.bincount(s).min() >= 5
