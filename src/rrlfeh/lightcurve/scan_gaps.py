"""The period of a folded Gaia curve from its phases alone, through Gaia's scanning law.

Gaia sees a star in groups of transits a fixed time apart: its two fields of view follow each
other by 106.57 min (the basic angle, 106.5 deg, at the spin rate) and the spin repeats every
360.23 min, so within a group two transits lie n * 360.23 +- {0, 106.57} min apart (medians of
the lags between the real Gaia DR3 transit times in ../shared, each to ~0.05 min). Folding keeps
that record: two transits dt apart sit dt / P apart in phase (mod 1). A folded curve without
its period (DG22's) therefore still holds P: the trial period at which the most pairs of phases
land on a lag, against the number expected by chance, is the star's period.

`scan_gap_period` scores every trial period at once: each pair of phases and each lag L give
intervals of P where the pair lands within `tolerance` of L (P = (L +- tol) / (dphase + k)); a
sweep over the intervals' ends counts the pairs at each P. The count expected from random
phases is n_pairs * n_lags * 2 tol / P, so the score is the Poisson z of the excess, and the
margin over the best score outside +-1 % of the peak says whether the period is clear.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MINUTE = 1.0 / 1440.0  # d
FOV_LAG_MIN = 106.57   # the following field of view, min after the preceding one
SPIN_MIN = 360.23      # one spin of the satellite, min
ALIAS_WINDOW = 0.01    # a runner-up peak lies more than 1 % of the period away


def scan_lags(max_lag_d: float = 1.0) -> np.ndarray:
    """The time differences (d) between transits of one group: n spins +- one field of view."""
    lags = {n * SPIN_MIN + s * FOV_LAG_MIN for n in range(8) for s in (-1, 0, 1)}
    return np.array(sorted(x * MINUTE for x in lags if 0.0 < x * MINUTE < max_lag_d))


@dataclass(frozen=True)
class GapPeriod:
    """A star's period from its phases: the best trial period, the pairs on a lag there, the
    Poisson z of that count and its margin over the best peak elsewhere."""

    period: float
    n_pairs: int
    z: float
    z_margin: float

    def accepted(self, min_z_margin: float) -> bool:
        return bool(np.isfinite(self.period) and self.z_margin >= min_z_margin)


NONE = GapPeriod(float("nan"), 0, float("nan"), float("nan"))


def scan_gap_period(phase: np.ndarray, *, tolerance_min: float = 0.05, min_period: float = 0.2,
                    max_period: float = 1.0) -> GapPeriod:
    """The period (d) that puts the most pairs of these folded phases on Gaia's scan lags."""
    ph = np.mod(np.asarray(phase, float), 1.0)
    ph = np.unique(ph[np.isfinite(ph)])
    if ph.size < 3:
        return NONE
    i, j = np.triu_indices(ph.size, 1)
    d = np.mod(ph[j] - ph[i], 1.0)
    d = np.concatenate([d, 1.0 - d])  # which of the two came first is not known
    tol = tolerance_min * MINUTE
    lags = scan_lags()
    lo, hi = [], []
    for lag in lags:
        for k in range(int(np.ceil(lag / min_period)) + 1):
            cycles = d + k
            p = lag / np.where(cycles > 0, cycles, np.nan)
            keep = (p > min_period) & (p < max_period)
            lo.append((lag - tol) / cycles[keep])
            hi.append((lag + tol) / cycles[keep])
    start, end = np.concatenate(lo), np.concatenate(hi)
    if start.size == 0:
        return NONE
    edge = np.concatenate([start, end])
    order = np.argsort(edge, kind="stable")
    edge = edge[order]
    depth = np.cumsum(np.where(order < start.size, 1, -1))
    expected = d.size * lags.size * 2.0 * tol / edge
    z = (depth - expected) / np.sqrt(expected)
    best = int(np.argmax(z))
    period = 0.5 * (edge[best] + edge[min(best + 1, edge.size - 1)])
    elsewhere = np.abs(edge / period - 1.0) > ALIAS_WINDOW
    runner_up = float(z[elsewhere].max()) if elsewhere.any() else 0.0
    return GapPeriod(float(period), int(depth[best]), float(z[best]), float(z[best] - runner_up))


def knobs_for(scan_gaps: Mapping[str, Any], kind: str | None) -> dict[str, Any]:
    """`scan_gap_periods` keywords from params' scan_gaps block for one type: its period range
    (`period_range`, by type; a narrower range has fewer chance peaks), tolerance and margin."""
    out = {k: v for k, v in scan_gaps.items() if k not in ("enabled", "period_range")}
    lo_hi = (scan_gaps.get("period_range") or {}).get(kind)
    if lo_hi is not None:
        out["min_period"], out["max_period"] = float(lo_hi[0]), float(lo_hi[1])
    return out


def scan_gap_periods(source_id: np.ndarray, phase: np.ndarray, *, min_z_margin: float = 3.0,
                     **knobs) -> pd.DataFrame:
    """`scan_gap_period` of every star of a long table (source_id, phase): one row a star in
    order of first appearance, with `accepted` (margin >= min_z_margin) and, when not, why."""
    rows = []
    for sid, ph in _stars(np.asarray(source_id, np.int64), np.asarray(phase, float)):
        g = scan_gap_period(ph, **knobs)
        ok = g.accepted(min_z_margin)
        reason = "" if ok else (
            f"no period given and none clear in the phases' Gaia scan gaps (margin z "
            f"{g.z_margin:.1f} < {min_z_margin:g}, {g.n_pairs} pairs on a lag)")
        rows.append((sid, g.period if ok else np.nan, g.period, g.n_pairs, g.z, g.z_margin,
                     ok, reason))
    return pd.DataFrame(rows, columns=["source_id", "period", "best_period", "n_pairs", "z",
                                       "z_margin", "accepted", "reason"]).astype(
        {"source_id": np.int64, "accepted": bool})


def periods_for(source_id: np.ndarray, phase: np.ndarray, stars: np.ndarray,
                scan_gaps: Mapping[str, Any] | None, kind: str | None) -> pd.DataFrame | None:
    """`scan_gap_periods` of the `stars` (of one type) in a long table, one row a star in the
    order of `stars` (NaN rows for a star without points), with params' scan_gaps block; None
    when the block is absent or switched off (a model registered before it: no search)."""
    if not scan_gaps or not scan_gaps.get("enabled", True):
        return None
    source_id = np.asarray(source_id, np.int64)
    mine = np.isin(source_id, stars)
    gaps = scan_gap_periods(source_id[mine], np.asarray(phase, float)[mine],
                            **knobs_for(scan_gaps, kind))
    return gaps.set_index("source_id").reindex(np.asarray(stars, np.int64))


def _stars(source_id: np.ndarray, phase: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(source_id, its phases) per star, in order of first appearance."""
    if source_id.size == 0:
        return
    order = np.argsort(source_id, kind="stable")
    ids, first, counts = np.unique(source_id[order], return_index=True, return_counts=True)
    appearance = np.argsort(order[first])
    for u in appearance:
        yield int(ids[u]), phase[order[first[u]:first[u] + counts[u]]]
