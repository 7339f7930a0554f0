"""Sample weights and K-fold strata from the [Fe/H] distribution (Monti et al. 2025, sect. 3).

The label distribution is peaked near -1.5 dex; weighting each star by 1/KDE density lets the rare
metal-rich and metal-poor stars count, and strata in [Fe/H] keep every fold's distribution alike.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import gaussian_kde


def kde_weights(y: np.ndarray, *, bandwidth: str | float = "scott",
                max_ratio: float | None = 50.0, fit: np.ndarray | None = None) -> np.ndarray:
    """Weights proportional to 1 / KDE density of `y`, normalised so that the weights of the
    stars the KDE is fitted on sum to their number.

    `fit` (boolean mask) chooses the stars the KDE is fitted on (the training stars; the others,
    e.g. a test split, get weights from that KDE and never shape it); None: all. `max_ratio`
    caps the largest weight at that multiple of the smallest fitted one, so a lone outlier in a
    tail cannot dominate the loss (None: no cap).
    """
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"kde_weights needs a non-empty 1-D array of [Fe/H], got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"kde_weights: {int((~np.isfinite(y)).sum())} non-finite [Fe/H] values")
    fit = np.ones(y.size, bool) if fit is None else np.asarray(fit, bool)
    ref = y[fit]
    if ref.size < 2 or np.ptp(ref) == 0:
        return np.ones_like(y)
    w = 1.0 / gaussian_kde(ref, bw_method=bandwidth)(y)
    if max_ratio is not None:
        w = np.minimum(w, w[fit].min() * max_ratio)
    return w * (ref.size / w[fit].sum())


def feh_strata(y: np.ndarray, *, n_bins: int = 10, min_per_bin: int = 5) -> np.ndarray:
    """Integer stratum per star: quantile bins of [Fe/H], sparse bins merged into a neighbour.

    Every stratum ends with at least `min_per_bin` members (the K of a stratified K-fold) when the
    sample allows it, so scikit-learn's StratifiedKFold never meets an under-filled class.
    """
    y = np.asarray(y, dtype=float)
    edges = np.unique(np.quantile(y, np.linspace(0, 1, n_bins + 1))[1:-1])
    strata = np.searchsorted(edges, y, side="right")
    labels, counts = np.unique(strata, return_counts=True)
    # Merge the smallest bin into its neighbour until each has min_per_bin (or one bin is left).
    while labels.size > 1 and counts.min() < min_per_bin:
        i = int(np.argmin(counts))
        j = i - 1 if i == labels.size - 1 or (i > 0 and counts[i - 1] <= counts[i + 1]) else i + 1
        strata[strata == labels[i]] = labels[j]
        labels, counts = np.unique(strata, return_counts=True)
    return np.searchsorted(labels, strata)


def stratified_split(strata: np.ndarray, fraction: float, seed: int):
    """Stratified (train index, validation index) with `fraction` of the stars in validation
    (unstratified where a stratum has too few stars, or the split too few, to stratify)."""
    from sklearn.model_selection import train_test_split

    strata = np.asarray(strata)
    idx = np.arange(len(strata))
    _, counts = np.unique(strata, return_counts=True)
    n_val = int(np.ceil(fraction * len(strata)))
    ok = counts.min(initial=2) >= 2 and counts.size <= min(n_val, len(strata) - n_val)
    stratify = strata if ok else None
    return train_test_split(idx, test_size=fraction, stratify=stratify, random_state=seed)
