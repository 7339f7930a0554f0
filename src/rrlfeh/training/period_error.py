"""The error a derived period adds to a served [Fe/H]: `feh_std` of stars scored without one.

A star sent without a period gets one from the period search; on a sparse curve it can be off
(an alias, a neighbouring peak) and the served value moves with it, which the out-of-fold
residuals (all at the catalogue period) do not hold. `period_shifts` cuts training stars with a
dense curve of their own to the augmentation's sizes and scores every subset through the one
scoring path twice, with the star's period and without it: the shift Δ = feh(no period) −
feh(period) needs no label. `derived_sigmas` then sets, per bin of epoch counts, the residual
scatter of period-derived rows so that the bin's out-of-fold residuals plus its shifts (paired
at random: the period's error is taken as independent of the rest) lie within ±1 and ±2 σ as
often as Gaussian ones would, never below the scatter with the period given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.training.served import bin_index, residual_scales, scatter_for_coverage

MIN_SHIFTS = 20        # fewer shifts in a bin: it keeps the scatter with the period given
MAX_PAIRS = 200_000    # residual-shift pairs per bin (all of them below this, else a sample)


def period_shifts(model: Any, epochs: pd.DataFrame, stars: pd.DataFrame,
                  source_ids: Sequence[int], n_epochs: Sequence[int], n_draws: int, seed: int,
                  min_epochs: int, bands: pd.DataFrame | None = None,
                  n_jobs: int = 1) -> pd.DataFrame:
    """One row per subset of the stars `source_ids` (rrlfeh.sparse.draw_subsets: `n_draws`
    draws of each size and the full curve) that the ScoringModel `model` scored both with the
    star's period, epoch of maximum and type (`stars`) and without them (with `bands`' BP/RP
    epochs where given): source_id, cut, the type and epochs of the no-period answer, and
    `shift` = its [Fe/H] minus the one with the period (NaN where it was not scored)."""
    from rrlfeh.serving.inputs import read_request
    from rrlfeh.serving.pipeline import score_request
    from rrlfeh.sparse import draw_subsets
    from rrlfeh.sparse_requests import request

    subsets, chosen = draw_subsets(epochs, source_ids, n_epochs, n_draws, seed, min_epochs)
    if subsets.empty:
        return pd.DataFrame(columns=["source_id", "cut", "type", "n_epochs", "shift"])
    answers = {}
    for mode in ("with_period", "without_period"):
        frame = request(chosen, subsets, stars, mode,
                        bands if mode == "without_period" else None)
        out = score_request(read_request(frame), model, derive_n_jobs=n_jobs)
        answers[mode] = out.set_index("source_id").reindex(subsets["subset_id"].to_numpy())
    given, derived = answers["with_period"], answers["without_period"]
    ok = ((given["status"] == "ok") & (derived["status"] == "ok")).to_numpy()
    shift = np.where(ok, derived["feh"].to_numpy(float) - given["feh"].to_numpy(float), np.nan)
    return pd.DataFrame({"source_id": subsets["source_id"].to_numpy(),
                         "cut": subsets["cut"].to_numpy(),
                         "type": derived["type"].to_numpy(object),
                         "n_epochs": derived["n_epochs"].to_numpy(float),
                         "shift": shift})


def _pairs(n_res: int, n_shift: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (residual, shift) of every pair, or of MAX_PAIRS drawn at random beyond that."""
    if n_res * n_shift <= MAX_PAIRS:
        return np.repeat(np.arange(n_res), n_shift), np.tile(np.arange(n_shift), n_res)
    return rng.integers(0, n_res, MAX_PAIRS), rng.integers(0, n_shift, MAX_PAIRS)


def derived_sigmas(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray,
                   shifts: pd.DataFrame, edges: Sequence[float], given: Sequence[float],
                   seed: int) -> tuple[list[float], list[float | None], list[int]]:
    """(scatter per bin for period-derived rows, the share of residual + shift pairs within ±1
    of the resulting σ (None where the bin kept `given`), the shifts per bin). `residual`,
    `spread`, `bins`: the out-of-fold calibration rows (`served.residual_scales`'s); `shifts`:
    `period_shifts` rows of this type; `given`: the scatter with the period."""
    residual, spread = np.asarray(residual, float), np.asarray(spread, float)
    use = shifts[np.isfinite(shifts["shift"].to_numpy(float))]
    shift_bins = bin_index(use["n_epochs"].to_numpy(float), edges)
    delta = use["shift"].to_numpy(float)
    rng = np.random.default_rng(seed)
    sigmas, within, counts = [], [], []
    for i, base in enumerate(given):
        r, s, d = residual[bins == i], spread[bins == i], delta[shift_bins == i]
        counts.append(int(d.size))
        if d.size < MIN_SHIFTS or r.size == 0:
            sigmas.append(float(base))
            within.append(None)
            continue
        a, b = _pairs(r.size, d.size, rng)
        total = np.abs(r[a] + d[b])
        sigma = max(float(base), scatter_for_coverage(total, s[a]))
        sigmas.append(sigma)
        within.append(float(np.mean(total <= np.sqrt(s[a] ** 2 + sigma**2))))
    return sigmas, within, counts


def held_out_derived_coverage(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray,
                              star: np.ndarray, shifts: pd.DataFrame, edges: Sequence[float],
                              seed: int, held_seed: int) -> list[dict[str, float] | None]:
    """Per bin, the coverage of the period-derived scatter on stars it was not calibrated on:
    the stars (of the residuals and of the shifts alike) split in two halves (`held_seed`),
    each half's scatter with the period (`served.residual_scales`) and without it
    (`derived_sigmas`) set on its residuals and shifts, and the other half's residual + shift
    pairs judged by it; None where a bin has too few shifts on a side."""
    residual, spread = np.asarray(residual, float), np.asarray(spread, float)
    use = shifts[np.isfinite(shifts["shift"].to_numpy(float))]
    ids = np.unique(np.concatenate([np.asarray(star), use["source_id"].to_numpy()]))
    first = np.random.default_rng(held_seed).permutation(ids)[: ids.size // 2]
    res_half, shift_half = np.isin(star, first), np.isin(use["source_id"].to_numpy(), first)
    shift_bins = bin_index(use["n_epochs"].to_numpy(float), edges)
    n_bins = len(edges) - 1
    rng = np.random.default_rng(seed)
    z1: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    for side in (True, False):
        cal_r, cal_s = res_half != side, shift_half != side  # calibrated on the other half
        given, _ = residual_scales(residual[cal_r], spread[cal_r], bins[cal_r], n_bins)
        sig, within, _ = derived_sigmas(residual[cal_r], spread[cal_r], bins[cal_r],
                                        use[cal_s], edges, given, seed)
        for i in range(n_bins):
            r_rows = np.flatnonzero(~cal_r & (bins == i))
            d = use["shift"].to_numpy(float)[~cal_s & (shift_bins == i)]
            if within[i] is None or d.size < MIN_SHIFTS or r_rows.size == 0:
                continue
            a, b = _pairs(r_rows.size, d.size, rng)
            total = np.abs(residual[r_rows][a] + d[b])
            z1[i].append(total / np.sqrt(spread[r_rows][a] ** 2 + sig[i] ** 2))
    out: list[dict[str, float] | None] = []
    for z in z1:
        zz = np.concatenate(z) if z else np.zeros(0)
        out.append({"within_1sigma": float(np.mean(zz <= 1)),
                    "within_2sigma": float(np.mean(zz <= 2)), "n": int(zz.size)}
                   if zz.size else None)
    return out
