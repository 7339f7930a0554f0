"""The shared batched linear algebra against numpy's own."""

from __future__ import annotations

import numpy as np

from rrlfeh.linalg import lower_inverse


def test_lower_inverse_is_numpys_inverse_of_each_matrix() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 32, 32))
    low = np.linalg.cholesky(a @ np.swapaxes(a, 1, 2) + 32 * np.eye(32))  # the spline's kind
    inv = lower_inverse(low)
    np.testing.assert_allclose(inv, np.linalg.inv(low), rtol=0, atol=1e-12)
    np.testing.assert_allclose(inv @ low, np.broadcast_to(np.eye(32), low.shape), atol=1e-12)
    assert np.all(np.triu(inv, 1) == 0)  # lower-triangular, exactly
    # the inverse of a leading block is the leading block of the inverse
    np.testing.assert_allclose(lower_inverse(low[:, :5, :5]), inv[:, :5, :5], atol=1e-14)
