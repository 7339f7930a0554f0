"""Figures that say how far to trust the model, on the stars of the pipeline's own folds and
test split: the classical relations beside the network, the coverage of the per-star error and
the error against the number of epochs (paper Fig. 7).

Baselines get exactly the network's stars: the K-fold folds of the training stars
(`crossval`'s, rebuilt from the same strata and seed) and the test split of `preprocess`. A
published relation is applied as it stands; a refitted form is fitted on each fold's training
part for its K-fold figures and on all training stars for the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rrlfeh.training.metrics import aggregate, regression_metrics


@dataclass(frozen=True)
class Stars:
    """One set of stars (training part or test split) with what the baselines need."""

    y: np.ndarray
    weights: np.ndarray
    features: dict[str, np.ndarray]  # period, phi31 (cosine convention), r21, plane features


def _metrics(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, float]:
    return {k: v for k, v in regression_metrics(y, pred, w).items() if k != "n"}


def baseline_row(name: str, predict: Callable[[Stars, np.ndarray | None, Stars | None,
                                               np.ndarray | None], np.ndarray],
                 train: Stars, test: Stars,
                 folds: Sequence[tuple[int, int, np.ndarray, np.ndarray]]) -> dict:
    """K-fold validation (mean ± std over the folds) and test figures of one baseline.

    `predict(fit_on, fit_index, apply_to, apply_index)` returns predictions for
    `apply_to[apply_index]` from a relation fitted on `fit_on[fit_index]` (ignored by a
    published relation)."""
    per_fold = []
    for _, _, tr, va in folds:
        pred = predict(train, tr, train, va)
        per_fold.append(regression_metrics(train.y[va], pred, train.weights[va]))
    all_train = np.arange(len(train.y))
    test_idx = np.arange(len(test.y))
    out = {"name": name, "val": aggregate(per_fold)}
    if len(test.y):
        out["test"] = _metrics(test.y, predict(train, all_train, test, test_idx), test.weights)
    return out


def coverage(residual: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Shares of |residual| within 1 and 2 sigma (a Gaussian error: 0.683 and 0.954)."""
    z = np.abs(np.asarray(residual, float)) / np.asarray(sigma, float)
    return {"within_1sigma": float(np.mean(z <= 1)), "within_2sigma": float(np.mean(z <= 2)),
            "n": int(z.size)}


OPEN_EPOCHS = 10_000  # an upper edge this high is no edge: the bin reads "70+"


def error_by_epochs(n_epochs: np.ndarray, residual: np.ndarray, edges: Sequence[int],
                    sigma: np.ndarray | None = None) -> pd.DataFrame:
    """RMSE, bias and (with `sigma`) the 1-sigma coverage in bins of the number of epochs."""
    n_epochs, residual = np.asarray(n_epochs), np.asarray(residual, float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (n_epochs >= lo) & (n_epochs < hi)
        label = f"{lo}+" if hi >= OPEN_EPOCHS else f"{lo}-{hi - 1}"  # the open last bin
        row = {"epochs": label, "n": int(m.sum()),
               "rmse": float(np.sqrt(np.mean(residual[m] ** 2))) if m.any() else float("nan"),
               "bias": float(np.mean(residual[m])) if m.any() else float("nan")}
        if sigma is not None:
            row["within_1sigma"] = (float(np.mean(np.abs(residual[m]) <= np.asarray(sigma)[m]))
                                    if m.any() else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)
