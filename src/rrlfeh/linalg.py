"""Small dense linear algebra on stacks of matrices, shared by the batched fits."""

from __future__ import annotations

import numpy as np


def lower_inverse(low: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower-triangular matrices (B, P, P) by forward substitution,
    vectorised over B (2x faster than `np.linalg.inv`'s LU on 32 x 32; the inverse of a leading
    block is the leading block of the inverse)."""
    b, p, _ = low.shape
    inv = np.zeros_like(low)
    for i in range(p):
        row = -np.matmul(low[:, i, None, :i], inv[:, :i, :])[:, 0, :]
        row[:, i] += 1.0
        inv[:, i, :] = row / low[:, i, i, None]
    return inv
