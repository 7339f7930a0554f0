"""Sparse copies of training stars: random subsets of a star's clean epochs, each run through the
whole preprocessing (Fourier features, fold, spline, resample) and kept with the star's label.

Gaia publishes a φ31 metallicity for only about half of its RR Lyrae: the rest have sparse or
noisy curves, where φ31 of a few epochs is far from the full curve's. A model that has seen
sparse curves of each metallicity learns what they look like, so every training star also comes
as copies of 15-40 of its epochs. A copy keeps its star's source_id (folds and splits go by star),
its period and epoch of maximum (the catalogue's, measured on the full curve).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

COPY_EPOCHS = "copies.parquet"  # the kept copies' epochs, beside the arrays (train's no-period
                                # calibration scores exactly those curves again)


@dataclass(frozen=True)
class AugmentSettings:
    """params.yaml preprocess.augment: the subset sizes, copies a star, the seed."""

    n_epochs: tuple[int, ...] = (15, 20, 25, 30, 40)
    copies: int = 0          # copies a star (0: no augmentation), sizes taken in turn
    min_left: int = 5        # a size is used only if the star has at least size + min_left epochs
    copy_weight: float = 1.0  # a star's copies together weigh this times its own curve
    seed: int = 42

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None) -> AugmentSettings:
        """From the `augment` block (absent or copies 0: no copies)."""
        p = dict(p or {})
        return cls(n_epochs=tuple(int(n) for n in p.get("n_epochs", cls.n_epochs)),
                   copies=int(p.get("copies", 0)), min_left=int(p.get("min_left", 5)),
                   copy_weight=float(p.get("copy_weight", 1.0)), seed=int(p.get("seed", 42)))


def copy_sizes(n_clean: int, s: AugmentSettings, rng: np.random.Generator) -> list[int]:
    """The subset sizes of one star's copies: `copies` of the sizes it has enough epochs for,
    in a random order, cycling when asked for more copies than sizes."""
    sizes = [n for n in s.n_epochs if n + s.min_left <= n_clean]
    if not sizes or s.copies <= 0:
        return []
    order = list(rng.permutation(sizes))
    return [int(order[i % len(order)]) for i in range(s.copies)]


def sparse_copies(epochs: pd.DataFrame, stars: pd.DataFrame, s: AugmentSettings
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, stars) of the copies: each copy under a new negative id, its rows a random subset
    of its star's clean (not rejected) epochs; stars has the copy's id, the star's `origin` id,
    `copy` (1, 2, ...), `n_subset`, and the star's period and epoch_max."""
    rng = np.random.default_rng(s.seed)
    clean = epochs.loc[~epochs["rejected"].to_numpy(bool)]
    groups = {sid: g for sid, g in clean.groupby("source_id", sort=False)}
    parts, rows, next_id = [], [], -1
    for star in stars.itertuples(index=False):
        g = groups.get(star.source_id)
        if g is None:
            continue
        for k, size in enumerate(copy_sizes(len(g), s, rng), 1):
            pick = np.sort(rng.choice(len(g), size=size, replace=False))
            parts.append(g.iloc[pick].assign(source_id=next_id))
            rows.append({"source_id": next_id, "origin": star.source_id, "copy": k,
                         "n_subset": size, "period": star.period, "epoch_max": star.epoch_max})
            next_id -= 1
    columns = ["source_id", "origin", "copy", "n_subset", "period", "epoch_max"]
    copies = pd.DataFrame(rows, columns=columns)
    return (pd.concat(parts, ignore_index=True) if parts else epochs.iloc[:0]), copies


def copy_weights(origin: np.ndarray, star_ids: np.ndarray, star_weights: np.ndarray,
                 copy_weight: float) -> np.ndarray:
    """Each copy's weight: its star's weight x copy_weight / (the star's number of copies), so a
    star's copies together weigh the same share of it whatever their number."""
    origin = np.asarray(origin)
    ids, counts = np.unique(origin, return_counts=True)
    per_star = pd.Series(np.asarray(star_weights, float), index=np.asarray(star_ids))
    n = pd.Series(counts, index=ids).reindex(origin).to_numpy(float)
    return per_star.reindex(origin).to_numpy(float) * copy_weight / n


def append_copies(arrays: Mapping[str, np.ndarray], copy_arrays: Mapping[str, np.ndarray],
                  origin: np.ndarray, copy: np.ndarray, copy_weight: float,
                  per_curve: Sequence[str]) -> dict[str, np.ndarray]:
    """The type's training arrays with the copies' rows after the stars' own: per-curve arrays
    from the copies' preprocessing, label and stratum of their star, test flag false, `copy`."""
    out = dict(arrays)
    at = pd.Series(np.arange(len(arrays["source_id"])), index=arrays["source_id"])
    star_row = at.reindex(origin).to_numpy()
    if np.isnan(star_row.astype(float)).any() or arrays["is_test"][star_row].any():
        raise ValueError("sparse copies of stars that are not training stars of this type")
    for key in per_curve:
        out[key] = np.concatenate([arrays[key], copy_arrays[key]])
    out["source_id"] = np.concatenate([arrays["source_id"], np.asarray(origin, np.int64)])
    out["y"] = np.concatenate([arrays["y"], arrays["y"][star_row]])
    own = ~arrays["is_test"]
    w = copy_weights(origin, arrays["source_id"][own], arrays["weights"][own], copy_weight)
    out["weights"] = np.concatenate([arrays["weights"], w.astype(np.float32)])
    out["strata"] = np.concatenate([arrays["strata"], arrays["strata"][star_row]])
    out["is_test"] = np.concatenate([arrays["is_test"], np.zeros(len(origin), bool)])
    out["copy"] = np.concatenate([np.zeros(len(arrays["y"]), np.int16),
                                  np.asarray(copy, np.int16)])
    return out
