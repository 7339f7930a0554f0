"""Derive period, epoch of maximum, type, amplitude, mean G, phi31 and R21 from raw G epochs.

Used when the catalogue lacks these parameters: the canonical epochs table goes in, one row per
star comes out (stars that cannot be fitted included, with NaNs and the reason), work spread over
processes in chunks of stars.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.lightcurve.classify import classify_bailey
from rrlfeh.lightcurve.features import fit_star
from rrlfeh.lightcurve.period import search_period

COLUMNS: dict[str, str] = {
    "source_id": "int64",
    "period": "float64",
    "epoch_max": "float64",
    "amplitude_g": "float64",
    "mean_mag_g": "float64",
    "phi31_g": "float64",
    "phi31_g_error": "float64",
    "r21_g": "float64",
    "n_epochs_g": "int64",
    "n_clipped": "int64",
    "type": "string",
    "fit_ok": "bool",
    "fit_reason": "string",
}
_VALUES = ("period", "epoch_max", "amplitude_g", "mean_mag_g", "phi31_g", "phi31_g_error",
           "r21_g")


def clean_mask(epochs: pd.DataFrame) -> np.ndarray:
    """Rows usable for the fit: not rejected, finite time/mag/flux/flux_error, both fluxes > 0."""
    ok = ~epochs["rejected"].to_numpy(dtype=bool)
    for col in ("time", "mag", "flux", "flux_error"):
        ok &= np.isfinite(epochs[col].to_numpy(dtype=float))
    with np.errstate(invalid="ignore"):
        ok &= (epochs["flux"].to_numpy(dtype=float) > 0)
        ok &= (epochs["flux_error"].to_numpy(dtype=float) > 0)
    return ok


def derive_star(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, *,
                min_period: float = 0.2, max_period: float = 1.0, min_epochs: int = 12,
                max_false_alarm: float = 1e-3, oversampling: float = 5.0,
                coarse_harmonics: int = 2, n_candidates: int = 8, refine_harmonics: int = 4,
                refine_factor: int = 10, min_points_per_param: float = 3.0,
                max_harmonics: int = 6, min_harmonics: int = 3, split_period: float = 0.42,
                min_rrab_period: float = 0.3, subharmonic_alpha: float = 1e-3,
                clip_sigma: float = 5.0, outlier_min_fraction: float = 0.5,
                max_clipped_fraction: float = 0.1) -> dict[str, Any]:
    """Parameters of one star from its clean G epochs; never raises: failures come back as
    fit_ok False with the reason and NaN values. The period search sets its own outliers aside;
    the Fourier fit starts again from every point and drops outliers one at a time
    (`fit_fourier_clipped`); n_clipped counts the points it left out."""
    out: dict[str, Any] = dict.fromkeys(_VALUES, np.nan)
    out.update(n_epochs_g=len(t), n_clipped=0, type="", fit_ok=False, fit_reason="")
    if len(t) < min_epochs:
        out["fit_reason"] = f"too few clean G epochs ({len(t)} < {min_epochs})"
        return out
    search_kw = dict(min_period=min_period, max_period=max_period, oversampling=oversampling,
                     coarse_harmonics=coarse_harmonics, n_candidates=n_candidates,
                     refine_harmonics=refine_harmonics, refine_factor=refine_factor,
                     min_points_per_param=min_points_per_param,
                     subharmonic_alpha=subharmonic_alpha, clip_sigma=clip_sigma,
                     outlier_min_fraction=outlier_min_fraction)
    try:
        found = search_period(t, mag, sigma, **search_kw)
        # the features' own fit (rrlfeh.lightcurve.features), as preprocess and serving do
        fit, keep = fit_star(t, mag, sigma, found.period, max_harmonics=max_harmonics,
                             min_harmonics=min_harmonics,
                             min_points_per_param=min_points_per_param, clip_sigma=clip_sigma,
                             outlier_min_fraction=outlier_min_fraction,
                             max_clipped_fraction=max_clipped_fraction)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        out["fit_reason"] = f"fit failed: {exc}"
        return out
    out["n_clipped"] = int((~keep).sum())
    if found.false_alarm > max_false_alarm:
        out["fit_reason"] = (f"no significant period in {min_period:g}-{max_period:g} d "
                             f"(best {found.period:.5f} d, false-alarm probability "
                             f"{found.false_alarm:.2g} > {max_false_alarm:g})")
        return out
    if found.at_edge:
        out["fit_reason"] = (f"best period {found.period:.5f} d at the search limit "
                             f"{min_period:g}-{max_period:g} d")
        return out
    out.update(period=fit.period, epoch_max=fit.epoch_max, amplitude_g=fit.amplitude,
               mean_mag_g=fit.mean_mag, phi31_g=fit.phi31, phi31_g_error=fit.phi31_error,
               r21_g=fit.r21, fit_ok=True)
    out["type"] = str(classify_bailey(fit.period, fit.amplitude, split_period=split_period,
                                      min_rrab_period=min_rrab_period)[0])
    return out


def _derive_chunk(stars: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
                  kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Worker: derive every star of a chunk, one BLAS thread per process (tiny matrices)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return [dict(derive_star(t, m, s, **kwargs), source_id=sid) for sid, t, m, s in stars]
    with threadpool_limits(limits=1):
        return [dict(derive_star(t, m, s, **kwargs), source_id=sid) for sid, t, m, s in stars]


def derive_light_curve_parameters(epochs: pd.DataFrame, *, min_period: float = 0.2,
                                  max_period: float = 1.0, min_epochs: int = 12,
                                  max_false_alarm: float = 1e-3, sigma_floor: float = 0.0,
                                  oversampling: float = 5.0, coarse_harmonics: int = 2,
                                  n_candidates: int = 8, refine_harmonics: int = 4,
                                  refine_factor: int = 10, min_points_per_param: float = 3.0,
                                  max_harmonics: int = 6, min_harmonics: int = 3,
                                  split_period: float = 0.42, min_rrab_period: float = 0.3,
                                  subharmonic_alpha: float = 1e-3, clip_sigma: float = 5.0,
                                  outlier_min_fraction: float = 0.5,
                                  max_clipped_fraction: float = 0.1, n_jobs: int = 2,
                                  chunk_size: int = 200) -> pd.DataFrame:
    """One row per star of the canonical epochs table (schema.EPOCHS), in order of first
    appearance: source_id, period, epoch_max, amplitude_g, mean_mag_g, phi31_g, phi31_g_error,
    r21_g, n_epochs_g (clean epochs), n_clipped (outliers left out of the fit), type, fit_ok,
    fit_reason ('' when ok).

    Rows with `rejected`, non-finite time/mag/flux/flux_error or non-positive flux/flux_error
    are left out of the fit. Magnitude errors are 1.0857 flux_error/flux, with `sigma_floor`
    (mag) added in quadrature. See `derive_star` and the lightcurve modules for the other knobs.
    n_jobs > 1 runs chunks of `chunk_size` stars in spawned processes (safe beside TensorFlow),
    so a calling script needs the usual `if __name__ == "__main__":` guard.
    """
    missing = [c for c in schema.EPOCHS if c not in epochs.columns]
    if missing:
        raise schema.SchemaError(f"epochs: required column(s) {missing} missing "
                                 f"(have {sorted(epochs.columns)})")
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    kwargs = dict(min_period=min_period, max_period=max_period, min_epochs=min_epochs,
                  max_false_alarm=max_false_alarm, oversampling=oversampling,
                  coarse_harmonics=coarse_harmonics, n_candidates=n_candidates,
                  refine_harmonics=refine_harmonics, refine_factor=refine_factor,
                  min_points_per_param=min_points_per_param, max_harmonics=max_harmonics,
                  min_harmonics=min_harmonics, split_period=split_period,
                  min_rrab_period=min_rrab_period, subharmonic_alpha=subharmonic_alpha,
                  clip_sigma=clip_sigma, outlier_min_fraction=outlier_min_fraction,
                  max_clipped_fraction=max_clipped_fraction)

    ids = pd.unique(epochs["source_id"].to_numpy(dtype=np.int64))
    clean = epochs.loc[clean_mask(epochs), ["source_id", "time", "mag", "flux", "flux_error"]]
    clean = clean.sort_values(["source_id", "time"], kind="stable")
    sid = clean["source_id"].to_numpy(dtype=np.int64)
    t = clean["time"].to_numpy(dtype=float)
    mag = clean["mag"].to_numpy(dtype=float)
    sigma = np.sqrt(schema.mag_error(clean) ** 2 + sigma_floor**2)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(sid)] if len(sid) else starts
    bounds = dict(zip(sid[starts].tolist(), zip(starts, ends, strict=True), strict=True))
    empty = np.empty(0)
    stars = []
    for s in ids.tolist():
        i, j = bounds.get(s, (0, 0))
        stars.append((s, t[i:j], mag[i:j], sigma[i:j]) if j > i else (s, empty, empty, empty))

    chunks = [stars[i:i + chunk_size] for i in range(0, len(stars), chunk_size)]
    if n_jobs == 1 or len(chunks) <= 1:
        rows = [r for c in chunks for r in _derive_chunk(c, kwargs)]
    else:
        ctx = multiprocessing.get_context("spawn")  # safe even if TensorFlow is loaded
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            rows = [r for res in pool.map(_derive_chunk, chunks, [kwargs] * len(chunks))
                    for r in res]
    frame = pd.DataFrame(rows, columns=list(COLUMNS)) if rows else pd.DataFrame(
        {c: pd.Series(dtype=d) for c, d in COLUMNS.items()})
    return frame.astype(COLUMNS).reset_index(drop=True)
