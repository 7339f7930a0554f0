"""Fourier light-curve shapes of RRab and RRc stars, and the model that evaluates them.

Convention (schema.py): m(t) = A0 + sum_k A_k cos(k 2 pi (t - E) / P + phi_k),
phi_k1 = phi_k - k phi_1, E the epoch of maximum light (minimum magnitude). Why a separate
module: others' tests evaluate the same model at arbitrary times.
Sources of the shape parameters: RRab amplitude ratios R_k1 and phase differences phi_k1 and their
slopes against phi31 were measured here by 5-harmonic cosine fits to 485 real Gaia G light curves of
DG22 (../shared/data/dg22; medians R21 0.49, R31 0.33, R41 0.21, R51 0.12 (used 0.10, noise
inflates it), R61 0.05 assumed; circular means
phi21 4.10, phi31 2.16, phi41 0.28, phi51 4.68; slopes d phi21/d phi31 0.41, d phi41/d phi31 1.19).
In this cosine convention a real RRab (fast rise, slow decline) has phi31 ~ 2.2, i.e. the
sine-convention value minus pi. RRc (no real RRc curves here): R21 ~ 0.1-0.25, R31 ~ 0.08 (brief,
after Clementini et al. 2023); phi21 ~ 4.75 chosen so the curve rises faster than it declines
(an assumption, unverified against real RRc).
"""

from __future__ import annotations

import numpy as np

N_HARMONICS: int = 6
_GRID = 1024   # phase grid used to find the peak-to-peak amplitude and the phase of maximum


def model_mag(t: np.ndarray, period, epoch_max, a0, amps, phases) -> np.ndarray:
    """Model G magnitude at times `t` (d) for Fourier parameters in the schema's cosine convention.

    `amps` / `phases` have the harmonics on the last axis: shape (K,) for one star evaluated at all
    `t`, or (len(t), K) for one parameter row per time; period, epoch_max, a0 broadcast with `t`.
    """
    t = np.asarray(t, dtype=float)
    amps, phases = np.asarray(amps, dtype=float), np.asarray(phases, dtype=float)
    x = 2.0 * np.pi * (t - np.asarray(epoch_max)) / np.asarray(period)
    m = np.asarray(a0, dtype=float) + np.zeros_like(x)
    for k in range(1, amps.shape[-1] + 1):
        m = m + amps[..., k - 1] * np.cos(k * x + phases[..., k - 1])
    return m


def rrab_shape(rng: np.random.Generator, phi31: np.ndarray, amplitude: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude ratios R_k1 and phase differences phi_k1, (n, 6) each, of RRab stars.

    Follows the DG22-measured medians and slopes against phi31; a shared 'steepness' draw makes
    the higher harmonics grow together, and larger amplitudes give more skewed curves (as seen).
    """
    n = phi31.size
    d31 = phi31 - 2.16
    steep = rng.standard_normal(n)
    da = amplitude - 0.85
    r = np.ones((n, N_HARMONICS))
    r[:, 1] = np.clip(0.48 + 0.05 * d31 + 0.10 * da + 0.025 * steep
                      + 0.03 * rng.standard_normal(n), 0.25, 0.65)
    r[:, 2] = np.clip(0.32 + 0.10 * da + 0.025 * steep + 0.03 * rng.standard_normal(n), 0.10, 0.50)
    r[:, 3] = np.clip(0.20 + 0.02 * steep + 0.03 * rng.standard_normal(n), 0.05, 0.35)
    r[:, 4] = np.clip(0.10 + 0.015 * steep + 0.02 * rng.standard_normal(n), 0.02, 0.25)
    r[:, 5] = np.clip(0.05 + 0.01 * steep + 0.012 * rng.standard_normal(n), 0.01, 0.15)
    p = np.zeros((n, N_HARMONICS))
    p[:, 1] = 4.10 + 0.41 * d31 + 0.08 * rng.standard_normal(n)
    p[:, 2] = phi31
    p[:, 3] = 0.28 + 1.19 * d31 + 0.15 * rng.standard_normal(n)
    p[:, 4] = 4.68 + 1.60 * d31 + 0.20 * rng.standard_normal(n)
    p[:, 5] = 2.80 + 2.00 * d31 + 0.25 * rng.standard_normal(n)
    return r, p % (2 * np.pi)


def rrc_shape(rng: np.random.Generator, phi31: np.ndarray, r21: np.ndarray,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude ratios and phase differences, (n, 6) each, of RRc stars: 4 harmonics, near-sine."""
    n = phi31.size
    r = np.zeros((n, N_HARMONICS))
    r[:, 0] = 1.0
    r[:, 1] = r21
    r[:, 2] = np.clip(0.08 + 0.03 * rng.standard_normal(n), 0.01, 0.20)
    r[:, 3] = np.clip(0.04 + 0.015 * rng.standard_normal(n), 0.0, 0.10)
    p = np.zeros((n, N_HARMONICS))
    p[:, 1] = 4.75 + 0.15 * rng.standard_normal(n)
    p[:, 2] = phi31
    p[:, 3] = 1.6 + 0.4 * rng.standard_normal(n)
    return r, p % (2 * np.pi)


def normalise(ratios: np.ndarray, phase_diffs: np.ndarray, amplitude: np.ndarray,
              mean_mag: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn shapes into (A0, A_k, phi_k) with the given peak-to-peak and intensity-mean magnitude.

    Scales the harmonics so the model's peak-to-peak equals `amplitude`, sets phi_1 so maximum
    light falls at phase 0 (t = epoch_max), and A0 so the intensity mean equals `mean_mag`.
    """
    x = np.linspace(0.0, 2 * np.pi, _GRID, endpoint=False)
    k = np.arange(1, ratios.shape[1] + 1)
    curves = _curves(ratios, phase_diffs, x)
    i = np.argmin(curves, axis=1)
    # parabolic refinement of the phase of minimum magnitude
    rows = np.arange(ratios.shape[0])
    y0, y1, y2 = curves[rows, i - 1], curves[rows, i], curves[rows, (i + 1) % _GRID]
    denom = y0 - 2 * y1 + y2
    frac = np.where(denom > 0, 0.5 * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
    x_max = x[i] + frac * (x[1] - x[0])
    phases = (phase_diffs + k[None, :] * x_max[:, None]) % (2 * np.pi)
    # peak-to-peak on a grid aligned with the maximum (exact at the minimum magnitude)
    curves = _curves(ratios, phases, x)
    ptp = curves.max(axis=1) - curves[:, 0]
    amps = ratios * (amplitude / ptp)[:, None]
    scaled = curves * (amplitude / ptp)[:, None]
    intensity_mean = -2.5 * np.log10(np.mean(10.0 ** (-0.4 * scaled), axis=1))
    return mean_mag - intensity_mean, amps, phases


def peak_to_peak(amps: np.ndarray, phases: np.ndarray, n_grid: int = 8192) -> np.ndarray:
    """Peak-to-peak (mag) of Fourier models, one per row, on a fine phase grid."""
    x = np.linspace(0.0, 2 * np.pi, n_grid, endpoint=False)
    out = np.empty(amps.shape[0])
    for lo in range(0, amps.shape[0], 512):
        curves = _curves(amps[lo:lo + 512], phases[lo:lo + 512], x)
        out[lo:lo + 512] = curves.max(axis=1) - curves.min(axis=1)
    return out


def _curves(amps: np.ndarray, phases: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_k amps[:, k] cos(k x + phases[:, k]) on the phase grid x, shape (n, len(x))."""
    out = np.zeros((amps.shape[0], x.size))
    for k in range(1, amps.shape[1] + 1):
        out += amps[:, k - 1:k] * np.cos(k * x[None, :] + phases[:, k - 1:k])
    return out
