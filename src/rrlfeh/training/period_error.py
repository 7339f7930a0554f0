"""The error a derived period adds to a served [Fe/H]: `feh_std` of stars scored without one.

A star sent without a period gets one from the period search; on a sparse curve it can be off
(an alias, a neighbouring peak) and the served value moves with it, which the out-of-fold
residuals (all at the catalogue period) do not hold. `calibration_subsets` takes the very curves
`feh_std` is calibrated on (the sparse copies of the training stars and the stars' own curves)
and `period_shifts` scores each through the one scoring path twice, with the star's period and
without it: the shift Δ = feh(no period) − feh(period) needs no label. `derived_sigmas` then
sets, per bin of epoch counts, the residual scatter of period-derived rows so that each curve's
out-of-fold residual plus its own shift lies within ±1 and ±2 σ as often as Gaussian errors
would, never below the scatter with the period given. A curve's residual and its shift are
kept together: a poorly sampled curve has both a worse φ31 and a less certain period, and the
curves the period search refuses are left out of both (shifts paired at random with other
curves' residuals asked for a 5-27 % wider scatter than the real DR3 test subsets' own sums).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.sparse import FULL
from rrlfeh.training.served import residual_scales, scatter_for_coverage

MIN_SHIFTS = 20  # fewer shifts in a bin: it keeps the scatter with the period given


def calibration_subsets(star: np.ndarray, copy: np.ndarray, copies: pd.DataFrame,
                        epochs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(subsets, their epochs) of the calibration rows `star`, `copy` (0: the star's own
    curve, k: its k-th sparse copy), each row a subset whose subset_id is its row number:
    a copy's epochs from `copies` (preprocess's copies.parquet: source_id, copy, the epochs),
    an own curve's clean (not rejected) epochs from `epochs`. subsets: subset_id, source_id,
    cut ('20' or 'full'), draw (the copy), n_epochs, as rrlfeh.sparse.draw_subsets gives them;
    rows whose epochs are not found are left out."""
    star, copy = np.asarray(star, np.int64), np.asarray(copy, np.int64)
    rows = pd.DataFrame({"subset_id": np.arange(star.size, dtype=np.int64),
                         "source_id": star, "copy": copy})
    clean = epochs.loc[~epochs["rejected"].to_numpy(bool)].drop(columns=["rejected"])
    own = rows[rows["copy"] == 0].merge(clean, on="source_id")
    cols = [c for c in clean.columns if c != "source_id"]
    # (a run without copies writes only the key columns: no rows to take the others from)
    made = rows[rows["copy"] > 0].merge(copies.reindex(columns=["source_id", "copy", *cols]),
                                        on=["source_id", "copy"])
    chosen = pd.concat([own, made], ignore_index=True)
    x = "time" if "time" in chosen.columns else "phase"
    chosen = chosen.sort_values(["subset_id", x], kind="stable", ignore_index=True)
    n = chosen.groupby("subset_id").size()
    subsets = rows.set_index("subset_id").loc[n.index].reset_index()
    subsets = subsets.assign(n_epochs=n.to_numpy(np.int64),
                             cut=np.where(subsets["copy"] == 0, FULL,
                                          n.to_numpy().astype(str)),
                             draw=subsets["copy"].to_numpy(np.int64))
    subsets = subsets[["subset_id", "source_id", "cut", "draw", "n_epochs"]]
    return subsets, chosen.assign(rejected=False)[["subset_id", *epochs.columns]]


def period_shifts(model: Any, subsets: pd.DataFrame, chosen: pd.DataFrame, stars: pd.DataFrame,
                  bands: pd.DataFrame | None = None, n_jobs: int = 1) -> pd.DataFrame:
    """One row per subset (`calibration_subsets`'s or rrlfeh.sparse.draw_subsets') that the
    ScoringModel `model` scored both with the star's period, epoch of maximum and type
    (`stars`) and without them (with `bands`' BP/RP epochs of its transits where given):
    subset_id, source_id, cut, the type and epochs of the no-period answer, and `shift` = its
    [Fe/H] minus the one with the period (NaN where either was not scored)."""
    from rrlfeh.serving.inputs import read_request
    from rrlfeh.serving.pipeline import score_request
    from rrlfeh.sparse_requests import request

    if subsets.empty:
        return pd.DataFrame(columns=["subset_id", "source_id", "cut", "type", "n_epochs",
                                     "shift"])
    answers = {}
    for mode in ("with_period", "without_period"):
        frame = request(chosen, subsets, stars, mode,
                        bands if mode == "without_period" else None)
        out = score_request(read_request(frame), model, derive_n_jobs=n_jobs)
        answers[mode] = out.set_index("source_id").reindex(subsets["subset_id"].to_numpy())
    given, derived = answers["with_period"], answers["without_period"]
    ok = ((given["status"] == "ok") & (derived["status"] == "ok")).to_numpy()
    shift = np.where(ok, derived["feh"].to_numpy(float) - given["feh"].to_numpy(float), np.nan)
    return pd.DataFrame({"subset_id": subsets["subset_id"].to_numpy(),
                         "source_id": subsets["source_id"].to_numpy(),
                         "cut": subsets["cut"].to_numpy(),
                         "type": derived["type"].to_numpy(object),
                         "n_epochs": derived["n_epochs"].to_numpy(float),
                         "shift": shift})


def derived_sigmas(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray,
                   shift: np.ndarray, given: Sequence[float]
                   ) -> tuple[list[float], list[float | None], list[int]]:
    """(scatter per bin for period-derived rows, the share of residual + shift within ±1 of
    the resulting σ (None where the bin kept `given`), the shifts per bin). `residual`,
    `spread`, `bins`: the out-of-fold calibration rows (`served.residual_scales`'s); `shift`:
    each row's own shift (NaN: not scored without a period, left out); `given`: the scatter
    with the period."""
    residual, spread = np.asarray(residual, float), np.asarray(spread, float)
    shift, bins = np.asarray(shift, float), np.asarray(bins)
    sigmas, within, counts = [], [], []
    for i, base in enumerate(given):
        rows = (bins == i) & np.isfinite(shift)
        counts.append(int(rows.sum()))
        if rows.sum() < MIN_SHIFTS:
            sigmas.append(float(base))
            within.append(None)
            continue
        total, s = np.abs(residual[rows] + shift[rows]), spread[rows]
        sigma = max(float(base), scatter_for_coverage(total, s))
        sigmas.append(sigma)
        within.append(float(np.mean(total <= np.sqrt(s**2 + sigma**2))))
    return sigmas, within, counts


def held_out_derived_coverage(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray,
                              star: np.ndarray, shift: np.ndarray, n_bins: int,
                              held_seed: int) -> list[dict[str, float] | None]:
    """Per bin, the coverage of the period-derived scatter on stars it was not calibrated on:
    the stars split in two halves (`held_seed`, all curves of a star on one side), each half's
    scatter with the period (`served.residual_scales`) and without it (`derived_sigmas`) set
    on its rows, and the other half's residual + shift judged by it; None where a bin has too
    few shifts on a side."""
    residual, spread = np.asarray(residual, float), np.asarray(spread, float)
    shift, bins, star = np.asarray(shift, float), np.asarray(bins), np.asarray(star)
    ids = np.unique(star)
    first = np.isin(star, np.random.default_rng(held_seed).permutation(ids)[: ids.size // 2])
    z1: list[list[np.ndarray]] = [[] for _ in range(n_bins)]
    for side in (first, ~first):
        cal = ~side  # calibrated on the other half
        given, _ = residual_scales(residual[cal], spread[cal], bins[cal], n_bins)
        sig, within, _ = derived_sigmas(residual[cal], spread[cal], bins[cal], shift[cal],
                                        given)
        for i in range(n_bins):
            rows = side & (bins == i) & np.isfinite(shift)
            if within[i] is None or rows.sum() < MIN_SHIFTS:
                continue
            total = np.abs(residual[rows] + shift[rows])
            z1[i].append(total / np.sqrt(spread[rows] ** 2 + sig[i] ** 2))
    out: list[dict[str, float] | None] = []
    for z in z1:
        zz = np.concatenate(z) if z else np.zeros(0)
        out.append({"within_1sigma": float(np.mean(zz <= 1)),
                    "within_2sigma": float(np.mean(zz <= 2)), "n": int(zz.size)}
                   if zz.size else None)
    return out
