"""Derive period, epoch of maximum, type, amplitude, mean G, phi31 and R21 from raw G epochs.

Where BP/RP epochs of a star are given too, its period comes from the joint G+BP+RP search
(`search_period_bands`: more points a transit, less noise); everything else is fitted on G.

Used when the catalogue lacks these parameters: the canonical epochs table goes in, one row per
star comes out (stars that cannot be fitted included, with NaNs and the reason), work spread over
processes in chunks of stars.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.lightcurve.classify import classify_bailey
from rrlfeh.lightcurve.features import fit_knobs, fit_star, fit_stars
from rrlfeh.lightcurve.period import search_period, search_period_bands

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
    "period_bands": "string",  # where the period came from: 'G', e.g. 'G+BP+RP', or 'given'
    "fit_ok": "bool",
    "fit_reason": "string",
}
_VALUES = ("period", "epoch_max", "amplitude_g", "mean_mag_g", "phi31_g", "phi31_g_error",
           "r21_g")
GIVEN = "given"  # period_bands of a star whose period was given, not searched


@dataclass(frozen=True)
class GivenPeriod:
    """A period the caller knows (a catalogue's): fitted at, never searched, so a sparse curve
    with a known period is not lost to a search its few epochs cannot win."""

    period: float
    false_alarm: float = 0.0
    at_edge: bool = False
    bands: tuple[str, ...] = (GIVEN,)


def clean_mask(epochs: pd.DataFrame) -> np.ndarray:
    """Rows usable for the fit: not rejected, finite time/mag/flux/flux_error, both fluxes > 0."""
    ok = ~epochs["rejected"].to_numpy(dtype=bool)
    for col in ("time", "mag", "flux", "flux_error"):
        ok &= np.isfinite(epochs[col].to_numpy(dtype=float))
    with np.errstate(invalid="ignore"):
        ok &= (epochs["flux"].to_numpy(dtype=float) > 0)
        ok &= (epochs["flux_error"].to_numpy(dtype=float) > 0)
    return ok


# one star's BP/RP epochs for the period search: time, mag, sigma, band label per point
BandPoints = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def derive_star(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, *,
                other_bands: BandPoints | None = None, min_period: float = 0.2,
                max_period: float = 1.0, min_epochs: int = 12,
                max_false_alarm: float = 1e-3, oversampling: float = 5.0,
                coarse_harmonics: int = 2, n_candidates: int = 8, refine_harmonics: int = 4,
                refine_factor: int = 10, min_points_per_param: float = 3.0,
                max_harmonics: int = 6, min_harmonics: int = 3, split_period: float = 0.42,
                min_rrab_period: float = 0.3, subharmonic_alpha: float = 1e-3,
                clip_sigma: float = 5.0, outlier_min_fraction: float = 0.5,
                max_clipped_fraction: float = 0.1, coarse_stride: int = 2,
                seed_harmonics: int = 1) -> dict[str, Any]:
    """Parameters of one star from its clean G epochs; never raises: failures come back as
    fit_ok False with the reason and NaN values. With `other_bands` (clean BP/RP points) the
    period comes from the joint search over all bands; the fit stays on G. The period search
    sets its own outliers aside; the Fourier fit starts again from every point and drops
    outliers one at a time (`fit_fourier_clipped`); n_clipped counts the points it left out.
    Many stars at once: `derive_light_curve_parameters` (the fits batched, the same numbers to
    rounding)."""
    kw = dict(locals())
    for name in ("t", "mag", "sigma", "other_bands"):
        kw.pop(name)
    out, found = _search_star(t, mag, sigma, other_bands, kw)
    if found is None:
        return out
    return _fitted_star(out, found, t, mag, sigma, kw)


def _search_star(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray,
                 other_bands: BandPoints | None, kw: dict[str, Any],
                 period: float = np.nan) -> tuple[dict[str, Any], Any]:
    """The row of a star before its Fourier fit, and its period search's result (None, the
    reason in the row, where the star has too few epochs or the search fails); a finite
    `period` is taken as given (`GivenPeriod`), not searched."""
    out: dict[str, Any] = dict.fromkeys(_VALUES, np.nan)
    out.update(n_epochs_g=len(t), n_clipped=0, type="", period_bands="", fit_ok=False,
               fit_reason="")
    if len(t) < kw["min_epochs"]:
        out["fit_reason"] = f"too few clean G epochs ({len(t)} < {kw['min_epochs']})"
        return out, None
    if np.isfinite(period):
        out["period_bands"] = GIVEN
        return out, GivenPeriod(float(period))
    search_kw = {k: kw[k] for k in SEARCH_KNOBS}
    try:
        found = _search(t, mag, sigma, other_bands, search_kw)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        out["fit_reason"] = f"fit failed: {exc}"
        return out, None
    out["period_bands"] = "+".join(found.bands) or "G"
    return out, found


SEARCH_KNOBS = ("min_period", "max_period", "oversampling", "coarse_harmonics", "n_candidates",
                "refine_harmonics", "refine_factor", "min_points_per_param",
                "subharmonic_alpha", "clip_sigma", "outlier_min_fraction", "coarse_stride",
                "seed_harmonics")


def _fitted_star(out: dict[str, Any], found: Any, t: np.ndarray, mag: np.ndarray,
                 sigma: np.ndarray, kw: dict[str, Any]) -> dict[str, Any]:
    """The row of a searched star after its own Fourier fit at the period (`fit_star`, the
    features' fit, as preprocess and serving do)."""
    try:
        fit, keep = fit_star(t, mag, sigma, found.period, **fit_knobs(kw))
    except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
        out["fit_reason"] = f"fit failed: {exc}"
        return out
    values = {"period": fit.period, "epoch_max": fit.epoch_max, "amplitude_g": fit.amplitude,
              "mean_mag_g": fit.mean_mag, "phi31_g": fit.phi31,
              "phi31_g_error": fit.phi31_error, "r21_g": fit.r21}
    return _finished(out, found, values, int((~keep).sum()), kw)


def _finished(out: dict[str, Any], found: Any, values: dict[str, float], n_clipped: int,
              kw: dict[str, Any]) -> dict[str, Any]:
    """The row of a fitted star: its values and type, or why its period is not kept (not
    significant, at the search limit)."""
    out["n_clipped"] = n_clipped
    lo, hi = kw["min_period"], kw["max_period"]
    if found.false_alarm > kw["max_false_alarm"]:
        out["fit_reason"] = (f"no significant period in {lo:g}-{hi:g} d "
                             f"(best {found.period:.5f} d, false-alarm probability "
                             f"{found.false_alarm:.2g} > {kw['max_false_alarm']:g})")
        return out
    if found.at_edge:
        out["fit_reason"] = f"best period {found.period:.5f} d at the search limit {lo:g}-{hi:g} d"
        return out
    out.update(values, fit_ok=True)
    out["type"] = str(classify_bailey(values["period"], values["amplitude_g"],
                                      split_period=kw["split_period"],
                                      min_rrab_period=kw["min_rrab_period"])[0])
    return out


def _search(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, other_bands: BandPoints | None,
            search_kw: dict[str, Any]):
    """The G-only period search, or the joint one where the star has BP/RP points."""
    if other_bands is None or len(other_bands[0]) == 0:
        return search_period(t, mag, sigma, **search_kw)
    bt, bm, bs, label = other_bands
    return search_period_bands(np.r_[t, bt], np.r_[mag, bm], np.r_[sigma, bs],
                               np.r_[np.full(len(t), "G"), np.asarray(label, str)], **search_kw)


# source_id, G time, mag, sigma, BP/RP points, the given period (NaN: search it)
Star = tuple[int, np.ndarray, np.ndarray, np.ndarray, BandPoints | None, float]


def _derive_many(stars: list[Star], kw: dict[str, Any]) -> list[dict[str, Any]]:
    """`derive_star` of every star of a chunk: each period searched, then the Fourier fits of
    all at once (`fit_stars`: the same fits to rounding, a fraction of the time); a star the
    batch cannot fit is fitted alone, for its reason."""
    searched = [(sid, t, m, s, *_search_star(t, m, s, b, kw, p)) for sid, t, m, s, b, p in stars]
    todo = [r for r in searched if r[5] is not None]
    batch = None
    if todo:
        offsets = np.r_[0, np.cumsum([len(r[1]) for r in todo])]
        batch = fit_stars(np.concatenate([r[1] for r in todo]),
                          np.concatenate([r[2] for r in todo]),
                          np.concatenate([r[3] for r in todo]), offsets,
                          np.array([r[5].period for r in todo]), **fit_knobs(kw))
    rows, j = [], 0
    for sid, t, m, s, out, found in searched:
        if found is None:
            rows.append(dict(out, source_id=sid))
            continue
        if batch is not None and batch.ok[j]:
            values = {"period": float(found.period), "epoch_max": batch.epoch_max[j],
                      "amplitude_g": batch.amplitude[j], "mean_mag_g": batch.mean_mag[j],
                      "phi31_g": batch.phi31[j], "phi31_g_error": batch.phi31_error[j],
                      "r21_g": batch.r21[j]}
            row = _finished(out, found, values, int(batch.n_clipped[j]), kw)
        else:
            row = _fitted_star(out, found, t, m, s, kw)
        rows.append(dict(row, source_id=sid))
        j += 1
    return rows


def _derive_chunk(stars: list[Star], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Worker: derive every star of a chunk, one BLAS thread per process (tiny matrices)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return _derive_many(stars, kwargs)
    with threadpool_limits(limits=1):
        return _derive_many(stars, kwargs)


def _star_slices(epochs: pd.DataFrame, sigma_floor: float
                 ) -> tuple[dict[int, tuple[int, int]], dict[str, np.ndarray]]:
    """Clean epochs sorted by (source_id, time) as arrays (t, mag, sigma, band where given) and
    each star's [start, end) rows in them."""
    cols = ["source_id", "time", "mag", "flux", "flux_error"]
    clean = epochs.loc[clean_mask(epochs), cols + (["band"] if "band" in epochs else [])]
    clean = clean.sort_values(["source_id", "time"], kind="stable")
    sid = clean["source_id"].to_numpy(dtype=np.int64)
    arrays = {"t": clean["time"].to_numpy(dtype=float), "mag": clean["mag"].to_numpy(dtype=float),
              "sigma": np.sqrt(schema.mag_error(clean) ** 2 + sigma_floor**2)}
    if "band" in clean:
        arrays["band"] = clean["band"].astype(str).str.strip().str.upper().to_numpy(str)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(sid)] if len(sid) else starts
    return dict(zip(sid[starts].tolist(), zip(starts, ends, strict=True), strict=True)), arrays


def _other_bands(bands: pd.DataFrame | None) -> pd.DataFrame | None:
    """The BP/RP (any non-G) rows of `bands`, checked against schema.EPOCHS + band."""
    if bands is None:
        return None
    missing = [c for c in (*schema.EPOCHS, "band") if c not in bands.columns]
    if missing:
        raise schema.SchemaError(f"bands: required column(s) {missing} missing "
                                 f"(have {sorted(bands.columns)})")
    return bands[bands["band"].astype(str).str.strip().str.upper() != "G"]


def derive_light_curve_parameters(epochs: pd.DataFrame, *, bands: pd.DataFrame | None = None,
                                  periods: Mapping[int, float] | None = None,
                                  min_period: float = 0.2,
                                  max_period: float = 1.0, min_epochs: int = 12,
                                  max_false_alarm: float = 1e-3, sigma_floor: float = 0.0,
                                  oversampling: float = 5.0, coarse_harmonics: int = 2,
                                  n_candidates: int = 8, refine_harmonics: int = 4,
                                  refine_factor: int = 10, min_points_per_param: float = 3.0,
                                  max_harmonics: int = 6, min_harmonics: int = 3,
                                  split_period: float = 0.42, min_rrab_period: float = 0.3,
                                  subharmonic_alpha: float = 1e-3, clip_sigma: float = 5.0,
                                  outlier_min_fraction: float = 0.5,
                                  max_clipped_fraction: float = 0.1, coarse_stride: int = 2,
                                  seed_harmonics: int = 1,
                                  n_jobs: int = 2, chunk_size: int = 200) -> pd.DataFrame:
    """One row per star of the canonical epochs table (schema.EPOCHS), in order of first
    appearance: source_id, period, epoch_max, amplitude_g, mean_mag_g, phi31_g, phi31_g_error,
    r21_g, n_epochs_g (clean epochs), n_clipped (outliers left out of the fit), type,
    period_bands ('G', or e.g. 'G+BP+RP' where the joint search used BP/RP), fit_ok, fit_reason
    ('' when ok).

    `bands`: BP/RP epochs (schema.EPOCHS columns plus `band`, 'BP' or 'RP'); the clean ones of a
    star join its clean G epochs in the period search (`search_period_bands`), nothing else.
    `periods`: known periods by source_id (a catalogue's): those stars are not searched; the rest
    (epoch of maximum, type, ...) is fitted at the given period (period_bands 'given').

    Rows with `rejected`, non-finite time/mag/flux/flux_error or non-positive flux/flux_error
    are left out of the fit. Magnitude errors are 1.0857 flux_error/flux, with `sigma_floor`
    (mag) added in quadrature. See `derive_star` and the lightcurve modules for the other knobs.
    n_jobs > 1 runs chunks of `chunk_size` stars in spawned processes (safe beside TensorFlow),
    kept for the next call (`worker_pool`), so a calling script needs the usual
    `if __name__ == "__main__":` guard.
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
                  max_clipped_fraction=max_clipped_fraction, coarse_stride=coarse_stride,
                  seed_harmonics=seed_harmonics)

    other = _other_bands(bands)
    ids = pd.unique(epochs["source_id"].to_numpy(dtype=np.int64))
    bounds, g = _star_slices(epochs, sigma_floor)
    b_bounds, b = _star_slices(other, sigma_floor) if other is not None else ({}, {})
    empty = np.empty(0)
    known = {} if periods is None else periods
    stars: list[Star] = []
    for s in ids.tolist():
        i, j = bounds.get(s, (0, 0))
        k, m = b_bounds.get(s, (0, 0))
        points = (b["t"][k:m], b["mag"][k:m], b["sigma"][k:m], b["band"][k:m]) if m > k else None
        p = float(known.get(s, np.nan))
        stars.append((s, g["t"][i:j], g["mag"][i:j], g["sigma"][i:j], points, p) if j > i
                     else (s, empty, empty, empty, None, p))

    chunks = [stars[i:i + chunk_size] for i in range(0, len(stars), chunk_size)]
    if n_jobs == 1 or len(chunks) <= 1:
        rows = [r for c in chunks for r in _derive_chunk(c, kwargs)]
    else:
        try:
            rows = _map_chunks(worker_pool(n_jobs), chunks, kwargs)
        except BrokenProcessPool:  # a worker died (killed, out of memory): once more, afresh
            drop_pool(n_jobs)
            rows = _map_chunks(worker_pool(n_jobs), chunks, kwargs)
    frame = pd.DataFrame(rows, columns=list(COLUMNS)) if rows else pd.DataFrame(
        {c: pd.Series(dtype=d) for c, d in COLUMNS.items()})
    return frame.astype(COLUMNS).reset_index(drop=True)


def _map_chunks(pool: ProcessPoolExecutor, chunks: list[list[Star]],
                kwargs: Mapping[str, Any]) -> list[tuple]:
    """Every chunk's rows, in order, from the pool's processes."""
    return [r for res in pool.map(_derive_chunk, chunks, [kwargs] * len(chunks)) for r in res]


_POOLS: dict[tuple[int, int], ProcessPoolExecutor] = {}  # by (owning process, n_jobs)
_POOLS_LOCK = threading.Lock()


def worker_pool(n_jobs: int) -> ProcessPoolExecutor:
    """The process's pool of `n_jobs` spawned workers (spawn: safe beside TensorFlow), made on
    first use and kept: a spawned worker pays the imports of its parent's main module and of
    this package (~1-2 s, a third of the workers' time when the pyfunc made a pool per chunk of
    2,000 stars), now once per process. Threads share it; a forked child makes its own (the
    parent's pool is not its to use); it closes at interpreter exit."""
    key = (os.getpid(), n_jobs)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = ProcessPoolExecutor(max_workers=n_jobs,
                                       mp_context=multiprocessing.get_context("spawn"))
            _POOLS[key] = pool
        return pool


def drop_pool(n_jobs: int) -> None:
    """Forget (and shut down) the pool of `n_jobs` workers: the next call makes a new one."""
    with _POOLS_LOCK:
        pool = _POOLS.pop((os.getpid(), n_jobs), None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
