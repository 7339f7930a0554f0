"""The per-star light-curve features, measured once: φ31, R21, A1, the amplitude and their
uncertainties from the best Fourier fit of a star's own epochs at its period.

The one function behind the stars table of `acquire` (derive), the per-star channels of the
network (`rrlfeh.preprocess`, used by training, scoring and serving alike) and the classical
relations the models are compared with. The fit is `fit_fourier_clipped`: outliers dropped one
at a time, the number of harmonics chosen by BIC; many stars at once go through its vectorised
twin `fit_fourier_batch` (the same numbers to rounding, ~40x faster). φ31 and R21 do not
depend on the time origin, so a fit of folded phases at period 1 gives the same numbers as a fit
of times at the period.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.lightcurve.fourier import (
    FourierBatch,
    FourierFit,
    fit_fourier_batch,
    fit_fourier_clipped,
)

# what `star_features` returns for every star (NaN where the fit cannot give it)
FEATURES: tuple[str, ...] = ("phi31", "phi31_error", "r21", "a1", "a1_error", "amplitude",
                             "n_harmonics", "n_clipped")
# the fit's knobs and their defaults (acquire.derive in params.yaml sets them for the pipeline)
FIT_KNOBS: dict[str, float] = {"max_harmonics": 6, "min_harmonics": 3,
                               "min_points_per_param": 3.0, "clip_sigma": 5.0,
                               "outlier_min_fraction": 0.5, "max_clipped_fraction": 0.1}
# a magnitude error where none is known (equal weights; the covariance is rescaled by chi2)
DEFAULT_MAG_ERROR = 0.01


def fit_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The Fourier-fit knobs among `knobs` (e.g. the acquire.derive section), defaults elsewhere."""
    return {k: type(v)(knobs.get(k, v)) for k, v in FIT_KNOBS.items()}


def fit_star(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, period: float,
             **knobs: Any) -> tuple[FourierFit, np.ndarray]:
    """The best Fourier fit of one star at `period` and the mask of epochs it kept (raises
    ValueError / LinAlgError when the star cannot be fitted)."""
    kw = fit_knobs(knobs)
    return fit_fourier_clipped(
        t, mag, sigma, period, clip_sigma=kw["clip_sigma"],
        outlier_min_fraction=kw["outlier_min_fraction"],
        max_clipped_fraction=kw["max_clipped_fraction"], max_harmonics=int(kw["max_harmonics"]),
        min_harmonics=int(kw["min_harmonics"]), min_points_per_param=kw["min_points_per_param"])


def features_of_fit(fit: FourierFit, keep: np.ndarray) -> dict[str, float]:
    """The FEATURES of a fit (φ31 in [0, 2π), cosine convention; errors from its covariance)."""
    a1_error = np.nan
    if fit.n_harmonics >= 1:
        a, b = fit.coefficients[1], fit.coefficients[2]
        grad = np.array([a, b]) / max(fit.amplitudes[0], 1e-12)
        a1_error = float(np.sqrt(grad @ fit.covariance[1:3, 1:3] @ grad))
    return {"phi31": fit.phi31, "phi31_error": fit.phi31_error, "r21": fit.r21,
            "a1": float(fit.amplitudes[0]), "a1_error": a1_error, "amplitude": fit.amplitude,
            "n_harmonics": float(fit.n_harmonics), "n_clipped": float((~keep).sum())}


def star_features(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray | None, period: float,
                  **knobs: Any) -> dict[str, float]:
    """FEATURES of one star; never raises: a star that cannot be fitted gets NaNs. `sigma`
    None, or entries not finite and > 0, are DEFAULT_MAG_ERROR."""
    t, mag = np.asarray(t, float), np.asarray(mag, float)
    sigma = clean_sigma(sigma, len(t))
    try:
        return features_of_fit(*fit_star(t, mag, sigma, period, **knobs))
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return dict.fromkeys(FEATURES, np.nan)


def clean_sigma(sigma: np.ndarray | None, n: int) -> np.ndarray:
    """Per-epoch errors for the fit: `sigma` None, or entries not finite and > 0, are
    DEFAULT_MAG_ERROR."""
    sigma = np.full(n, DEFAULT_MAG_ERROR) if sigma is None else np.asarray(sigma, float)
    return np.where(np.isfinite(sigma) & (sigma > 0), sigma, DEFAULT_MAG_ERROR)


def features_of_batch(batch: FourierBatch) -> pd.DataFrame:
    """FEATURES of every star of a batched fit (`features_of_fit`, vectorised; NaN rows where
    the star could not be fitted)."""
    a, b = batch.coefficients[:, 1], batch.coefficients[:, 2]
    scale = np.maximum(batch.amplitudes[:, 0], 1e-12)
    grad = np.stack([a, b], axis=1) / scale[:, None]
    var = np.einsum("si,sij,sj->s", grad, batch.covariance[:, 1:3, 1:3], grad)
    ok = batch.ok
    frame = pd.DataFrame({
        "phi31": batch.phi31, "phi31_error": batch.phi31_error, "r21": batch.r21,
        "a1": batch.amplitudes[:, 0], "a1_error": np.sqrt(var), "amplitude": batch.amplitude,
        "n_harmonics": batch.n_harmonics.astype(float),
        "n_clipped": batch.n_clipped.astype(float)}, columns=list(FEATURES), dtype=float)
    frame.loc[~ok, :] = np.nan
    return frame


def features_of_stars(x: np.ndarray, mag: np.ndarray, sigma: np.ndarray | None,
                      offsets: np.ndarray, period: np.ndarray | float, *, shape: bool = True,
                      **knobs: Any) -> pd.DataFrame:
    """FEATURES of a ragged batch: star i owns epochs offsets[i]:offsets[i+1] of `x` (times, or
    phases with period 1), `mag`, `sigma`; one row a star, in batch order. The stars are fitted
    together (`fit_fourier_batch`: the numbers of `star_features`, star by star, to rounding).
    `shape` False: no peak-to-peak `amplitude` (NaN), the rest the same, faster."""
    x, mag = np.asarray(x, float), np.asarray(mag, float)
    return features_of_batch(fit_stars(x, mag, clean_sigma(sigma, len(x)), offsets, period,
                                       shape=shape, **knobs))


def fit_stars(x: np.ndarray, mag: np.ndarray, sigma: np.ndarray, offsets: np.ndarray,
              period: np.ndarray | float, *, shape: bool = True, **knobs: Any) -> FourierBatch:
    """`fit_star` of a ragged batch (star i: offsets[i]:offsets[i+1]), vectorised
    (`fit_fourier_batch`: the same fits to rounding; a star `fit_star` raises for is not ok;
    the model curve's amplitude, epoch of maximum and mean magnitude only with `shape`)."""
    kw = fit_knobs(knobs)
    return fit_fourier_batch(
        x, mag, sigma, offsets, period, clip_sigma=kw["clip_sigma"],
        outlier_min_fraction=kw["outlier_min_fraction"],
        max_clipped_fraction=kw["max_clipped_fraction"], max_harmonics=int(kw["max_harmonics"]),
        min_harmonics=int(kw["min_harmonics"]), min_points_per_param=kw["min_points_per_param"],
        shape=shape)


def features_one_by_one(x: np.ndarray, mag: np.ndarray, sigma: np.ndarray | None,
                        offsets: np.ndarray, period: np.ndarray | float,
                        **knobs: Any) -> pd.DataFrame:
    """`features_of_stars` star by star with `star_features` (the reference the batch is
    tested against)."""
    n = len(offsets) - 1
    period = np.broadcast_to(np.asarray(period, float), (n,))
    rows = []
    with np.errstate(all="ignore"):
        for i in range(n):
            s = slice(offsets[i], offsets[i + 1])
            rows.append(star_features(x[s], mag[s], None if sigma is None else sigma[s],
                                      float(period[i]), **knobs))
    return pd.DataFrame(rows, columns=list(FEATURES), dtype=float)
