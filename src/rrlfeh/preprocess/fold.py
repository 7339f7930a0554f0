"""Phase folding and per-star bookkeeping on ragged, flat light-curve arrays (no per-star loop).

A batch of light curves is held as flat per-epoch arrays plus a per-epoch star index; after
`sort_by_star_phase` the epochs of each star are contiguous and `offsets[i]:offsets[i + 1]`
slices star i. Every function here works on all stars at once with numpy primitives.
"""

from __future__ import annotations

import numpy as np

from rrlfeh.reasons import first_of


def fold_phase(time: np.ndarray, epoch_max: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Phase in [0, 1) of each epoch, Phi = frac((T - E) / P), maximum light at phase 0.

    `epoch_max` and `period` broadcast against `time` (give them per epoch, e.g. `period[star]`).
    Non-finite inputs or non-positive periods give NaN.
    """
    time, epoch_max, period = np.broadcast_arrays(np.asarray(time, float),
                                                  np.asarray(epoch_max, float),
                                                  np.asarray(period, float))
    good = np.isfinite(time) & np.isfinite(epoch_max) & np.isfinite(period) & (period > 0)
    phase = np.full(time.shape, np.nan)
    cycles = (time[good] - epoch_max[good]) / period[good]
    phase[good] = wrap_phase(cycles)
    return phase


def wrap_phase(phase: np.ndarray) -> np.ndarray:
    """Map any phase to [0, 1) (1.0 and rounding up to 1.0 become 0.0); NaN stays NaN."""
    out = np.mod(np.asarray(phase, float), 1.0)
    out[out >= 1.0] = 0.0
    return out


def star_index(epoch_source_id: np.ndarray, star_id: np.ndarray) -> np.ndarray:
    """Row of `star_id` that each epoch belongs to, -1 where its source_id is not in `star_id`.

    `star_id` must be unique (a ValueError names the repeated ids otherwise).
    """
    star_id = np.asarray(star_id)
    epoch_source_id = np.asarray(epoch_source_id)
    order = np.argsort(star_id, kind="stable")
    sorted_ids = star_id[order]
    repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if repeated.size:
        raise ValueError("star source_ids must be unique; repeated: "
                         f"{first_of(np.unique(repeated), 5)}")
    if sorted_ids.size == 0:
        return np.full(epoch_source_id.shape, -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, epoch_source_id), 0, sorted_ids.size - 1)
    found = sorted_ids[pos] == epoch_source_id
    return np.where(found, order[pos], -1).astype(np.int64)


def sort_by_star_phase(star: np.ndarray, phase: np.ndarray,
                       tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Permutation that groups epochs by star and orders each star by phase (then `tiebreak`)."""
    keys = (phase, star) if tiebreak is None else (tiebreak, phase, star)
    return np.lexsort(keys)


def offsets_from_sorted(star_sorted: np.ndarray, n_stars: int) -> np.ndarray:
    """Offsets (n_stars + 1,) of each star's slice in arrays sorted by star index 0..n_stars-1."""
    counts = np.bincount(star_sorted, minlength=n_stars)
    offsets = np.zeros(n_stars + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def max_phase_gap(phase_sorted: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Largest gap in phase of each star, wrapping round 1 -> 0 (1.0 for a star with < 2 epochs).

    `phase_sorted` must be sorted by phase within each star's slice.
    """
    n_stars = offsets.size - 1
    counts = np.diff(offsets)
    gap = np.ones(n_stars)
    has = counts > 0
    first = phase_sorted[offsets[:-1][has]]
    last = phase_sorted[offsets[1:][has] - 1]
    gap[has] = first + 1.0 - last                      # the wrap-around gap
    if phase_sorted.size > 1:
        diffs = np.diff(phase_sorted)
        star_of_diff = np.repeat(np.arange(n_stars), counts)[1:]
        same = star_of_diff == np.repeat(np.arange(n_stars), counts)[:-1]
        inner = np.zeros(n_stars)
        np.maximum.at(inner, star_of_diff[same], diffs[same])
        gap = np.maximum(gap, inner)
    gap[counts < 2] = 1.0
    return gap


def count_adjacent_equal(values_sorted: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per star, how many epochs repeat the value of the previous epoch in the same slice
    (after sorting so that equal values are adjacent, this counts duplicates)."""
    n_stars = offsets.size - 1
    counts = np.diff(offsets)
    if values_sorted.size < 2:
        return np.zeros(n_stars, dtype=np.int64)
    star = np.repeat(np.arange(n_stars), counts)
    dup = (values_sorted[1:] == values_sorted[:-1]) & (star[1:] == star[:-1])
    return np.bincount(star[1:][dup], minlength=n_stars).astype(np.int64)
