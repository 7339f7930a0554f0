"""The training arrays of one RR Lyrae type as written by the `preprocess` stage.

The file holds the training stars and the test split (`is_test`); `load_training_set` gives the
training part unless asked otherwise, so a search or K-fold cannot see a test star by accident.
Rows with `copy` > 0 are sparse copies of a training star (random subsets of its epochs,
`rrlfeh.preprocess.augment`): same source_id and label, their weights shared with the star's
own row; `originals()` drops them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED = ("X", "y", "weights", "strata", "source_id", "n_epochs", "period")


@dataclass(frozen=True)
class TrainingSet:
    """X (N, steps, 2) = (standardised mag, phase x period); y = [Fe/H]; KDE weights; strata."""

    kind: str
    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    strata: np.ndarray
    source_id: np.ndarray
    n_epochs: np.ndarray
    period: np.ndarray
    is_test: np.ndarray
    channels: tuple[str, ...] = ("standardised_mag", "phase_x_period_d")
    # per-star features as the network's channels carry them (preprocess.network_input
    # .star_values): phi31 (centred), r21, phi31_error; the classical relations' inputs
    phi31: np.ndarray | None = None
    r21: np.ndarray | None = None
    phi31_error: np.ndarray | None = None
    amplitude: np.ndarray | None = None  # peak-to-peak of the smooth curve (mag)
    copy: np.ndarray | None = None       # 0: the star's own curve; k > 0: its k-th sparse copy
    # φ31 (centred) and R21 from the dense curves' shapes (rrlfeh.lightcurve.templates)
    phi31_template: np.ndarray | None = None
    r21_template: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int]:
        """(steps, channels) of one curve."""
        return tuple(self.X.shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> TrainingSet:
        """The stars at `index` (fold training or validation part)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return TrainingSet(self.kind, self.X[index], self.y[index], self.weights[index],
                           self.strata[index], self.source_id[index], self.n_epochs[index],
                           self.period[index], self.is_test[index], self.channels,
                           pick(self.phi31), pick(self.r21), pick(self.phi31_error),
                           pick(self.amplitude), pick(self.copy), pick(self.phi31_template),
                           pick(self.r21_template))

    @property
    def is_copy(self) -> np.ndarray:
        """True for the rows that are sparse copies of a star (not its own full curve)."""
        return np.zeros(len(self), bool) if self.copy is None else self.copy > 0

    def originals(self) -> TrainingSet:
        """The stars' own curves only (no sparse copies): what Table 1 and the line are on."""
        return self if not self.is_copy.any() else self.subset(np.flatnonzero(~self.is_copy))


PARTS = ("train", "test", "all")


def load_training_set(path: str | Path, kind: str | None = None,
                      part: str = "train") -> TrainingSet:
    """Read data/processed/<type>.npz, its `part`: the training stars (default), the test split
    or all; a missing array or a non-finite value is a ValueError that names the file and the
    first offending star."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no training arrays (run `rrlfeh preprocess` first)")
    with np.load(path) as d:
        missing = [k for k in REQUIRED if k not in d.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        arrays = {k: d[k] for k in REQUIRED}
        n = len(arrays["y"])
        is_test = d["is_test"].astype(bool) if "is_test" in d.files else np.zeros(n, bool)
        channels = (tuple(str(c) for c in d["channels"]) if "channels" in d.files
                    else ("standardised_mag", "phase_x_period_d"))
        star = {k: d[f"star_{k}"].astype(float) if f"star_{k}" in d.files else None
                for k in ("phi31", "r21", "phi31_error", "phi31_template", "r21_template")}
        star["amplitude"] = d["amplitude"].astype(float) if "amplitude" in d.files else None
        star["copy"] = (d["copy"].astype(int) if "copy" in d.files
                        else np.zeros(len(d["y"]), int))
    x, y, w = arrays["X"], arrays["y"], arrays["weights"]
    if x.ndim != 3 or len(x) != len(y) or len(w) != len(y):
        raise ValueError(f"{path}: X {x.shape}, y {y.shape}, weights {w.shape} do not match")
    bad = ~(np.isfinite(x).all(axis=(1, 2)) & np.isfinite(y) & np.isfinite(w) & (w > 0))
    if bad.any():
        sid = arrays["source_id"][np.flatnonzero(bad)[0]]
        raise ValueError(f"{path}: {int(bad.sum())} stars with non-finite input, label or "
                         f"weight, first source_id {sid}")
    full = TrainingSet(kind or path.stem, x.astype(np.float32), y.astype(np.float32),
                       w.astype(np.float32), arrays["strata"].astype(int),
                       arrays["source_id"].astype(np.int64), arrays["n_epochs"].astype(int),
                       arrays["period"].astype(float), is_test, channels, **star)
    if part == "all":
        return full
    return full.subset(np.flatnonzero(is_test if part == "test" else ~is_test))
