"""The paper's Table-1 metrics (R², wRMSE, wMAE, RMSE, MAE) and their mean ± std over folds.

The weighted forms use the KDE sample weights: wRMSE = sqrt(Σw(y-ŷ)² / Σw), wMAE = Σw|y-ŷ| / Σw.
R² is the plain coefficient of determination (1 - SS_res / SS_tot), as sklearn's r2_score.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

NAMES = ("r2", "wrmse", "wmae", "rmse", "mae")


def regression_metrics(y: np.ndarray, pred: np.ndarray,
                       weights: np.ndarray | None = None) -> dict[str, float]:
    """R², wRMSE, wMAE, RMSE, MAE (and n) of predictions `pred` of labels `y`."""
    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if not (y.shape == pred.shape == w.shape) or y.ndim != 1:
        raise ValueError(f"y {y.shape}, pred {pred.shape}, weights {w.shape} must be equal 1-D")
    if len(y) < 2:
        raise ValueError(f"need at least 2 stars for the metrics, got {len(y)}")
    if not (np.isfinite(y).all() and np.isfinite(pred).all() and (w >= 0).all() and w.sum() > 0):
        raise ValueError("labels and predictions must be finite and weights >= 0 with a "
                         "positive sum")
    r = y - pred
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "r2": 1.0 - float(np.sum(r**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "wrmse": float(np.sqrt(np.sum(w * r**2) / w.sum())),
        "wmae": float(np.sum(w * np.abs(r)) / w.sum()),
        "rmse": float(np.sqrt(np.mean(r**2))),
        "mae": float(np.mean(np.abs(r))),
        "n": int(len(y)),
    }


def aggregate(per_fold: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=0) over folds of each metric in NAMES."""
    rows = list(per_fold)
    if not rows:
        raise ValueError("no folds to aggregate")
    out = {}
    for name in NAMES:
        v = np.array([r[name] for r in rows], dtype=float)
        out[name] = {"mean": float(np.mean(v)), "std": float(np.std(v))}
    return out
