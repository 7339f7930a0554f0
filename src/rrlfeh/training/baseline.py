"""The classical baseline: a linear [Fe/H]–(P, φ31, R21) relation fitted on the same folds.

Features come from the very inputs the network sees: the period, and the Fourier phases and
amplitudes of the standardised curve resampled uniformly in phase (an FFT of channel 0). A
weighted least-squares plane in (P, φ31, R21) is the textbook photometric-metallicity relation
(e.g. Li et al. 2023); the network has to beat it to earn its keep.
"""

from __future__ import annotations

import numpy as np


def fourier_features(x: np.ndarray, period: np.ndarray) -> np.ndarray:
    """(N, 3) = period, φ31 (cosine convention, relative to a fixed centre) and R21 of the
    curves' channel 0: the per-star values the network's scalar channels carry."""
    from rrlfeh.preprocess.network_input import fourier_scalars

    phi31, r21 = fourier_scalars(np.asarray(x, dtype=float)[:, :, 0])
    return np.column_stack([np.asarray(period, dtype=float), phi31, r21])


def plane_features(x: np.ndarray, period: np.ndarray) -> np.ndarray:
    """The classical plane's features: (P, φ31, R21), or (φ31, R21) where any period is unknown
    (curves without periods, e.g. DG22)."""
    f = fourier_features(x, period)
    return f if np.isfinite(f[:, 0]).all() else f[:, 1:]


class LinearRelation:
    """Weighted least-squares plane [Fe/H] = a + b·features (KDE weights, as the network)."""

    def fit(self, features: np.ndarray, y: np.ndarray,
            weights: np.ndarray | None = None) -> LinearRelation:
        a = np.column_stack([np.ones(len(y)), features])
        sw = np.sqrt(np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float))
        self.coef_, *_ = np.linalg.lstsq(a * sw[:, None], np.asarray(y) * sw, rcond=None)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.coef_[0] + features @ self.coef_[1:]
