"""An independent Fourier fit for tests: plain least squares in numpy, the order picked by the
fit's own BIC, and the classical relation applied to its φ31, R21 and amplitude. What the
tests compare the package's own fits and relations against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def fourier_values(x: np.ndarray, mag: np.ndarray, sigma: np.ndarray | None = None,
                   orders: tuple[int, ...] = (3, 4, 5, 6)) -> dict[str, float]:
    """φ31 (cosine convention, minus 3.3 rad, wrapped), R21 and the peak-to-peak amplitude of
    the weighted (1/sigma; equal without) least-squares Fourier series in `x` (radians, one
    cycle 2π) whose order among `orders` the scale-free BIC picks."""
    w = np.ones_like(x) if sigma is None else 1.0 / np.asarray(sigma, float)
    best = None
    for k in orders:
        design = np.column_stack([np.ones_like(x)] + [f(j * x) for j in range(1, k + 1)
                                                      for f in (np.cos, np.sin)])
        coef = np.linalg.lstsq(design * w[:, None], mag * w, rcond=None)[0]
        chi2 = np.sum(((mag - design @ coef) * w) ** 2)
        bic = len(x) * np.log(chi2 / len(x)) + (2 * k + 1) * np.log(len(x))
        if best is None or bic < best[0]:
            best = (bic, coef)
    a, b = best[1][1::2], best[1][2::2]
    ph = np.arctan2(-b, a)
    grid = 2 * np.pi * np.linspace(0, 1, 1000, endpoint=False)
    curve = sum(a[j] * np.cos((j + 1) * grid) + b[j] * np.sin((j + 1) * grid)
                for j in range(len(a)))
    return {"phi31": float(np.angle(np.exp(1j * (ph[2] - 3 * ph[0] - 3.3)))),
            "r21": float(np.hypot(a[1], b[1]) / np.hypot(a[0], b[0])),
            "amplitude": float(np.ptp(curve))}


def relation_at(relation: Mapping[str, Any], values: Mapping[str, float]) -> float:
    """A model's classical relation (its `coef`: intercept, then one a feature) at `values`."""
    return relation["coef"][0] + sum(c * values[f] for c, f in zip(
        relation["coef"][1:], relation["features"], strict=True))
