"""The classical baseline: a linear [Fe/H]–(P, φ31, R21) relation fitted on the same folds.

Features come from the very inputs the network sees: the period, and the Fourier phases and
amplitudes of the standardised curve resampled uniformly in phase (an FFT of channel 0). A
weighted least-squares plane in (P, φ31, R21) is the textbook photometric-metallicity relation
(e.g. Li et al. 2023); the network has to beat it to earn its keep.
"""

from __future__ import annotations

import numpy as np


def fourier_features(x: np.ndarray, period: np.ndarray) -> np.ndarray:
    """(N, 3) = period, φ31 (cosine convention, unwrapped around its circular mean), R21."""
    mag = np.asarray(x, dtype=float)[:, :, 0]
    coef = np.fft.rfft(mag, axis=1)[:, 1:4]  # harmonics 1..3 of a curve uniform in phase
    amp = np.abs(coef)
    phase = np.angle(coef)  # m = Σ A_k cos(k 2πΦ + φ_k)
    phi31 = np.mod(phase[:, 2] - 3 * phase[:, 0], 2 * np.pi)
    centre = np.angle(np.mean(np.exp(1j * phi31)))
    phi31 = centre + np.angle(np.exp(1j * (phi31 - centre)))
    r21 = amp[:, 1] / np.maximum(amp[:, 0], 1e-12)
    return np.column_stack([np.asarray(period, dtype=float), phi31, r21])


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
