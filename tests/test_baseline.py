"""The classical baseline's features and fit."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.training.baseline import LinearRelation, fourier_features


def test_fourier_features_recover_phi31_and_r21_of_a_known_curve():
    phase = np.arange(264) / 264
    a1, a2, a3, p1, p3 = 0.3, 0.15, 0.1, 0.4, 2.0
    curve = (a1 * np.cos(2 * np.pi * phase + p1) + a2 * np.cos(4 * np.pi * phase)
             + a3 * np.cos(6 * np.pi * phase + p3))
    curve = (curve - curve.mean()) / curve.std()
    x = np.stack([np.stack([curve, phase * 0.55], -1)] * 3)
    f = fourier_features(x, np.array([0.5, 0.55, 0.6]))
    assert f[:, 0] == pytest.approx([0.5, 0.55, 0.6])
    from rrlfeh.preprocess.network_input import PHI31_CENTRE

    # φ31 relative to the fixed centre, wrapped to ±π
    assert np.mod(f[0, 1] + PHI31_CENTRE, 2 * np.pi) == pytest.approx(np.mod(p3 - 3 * p1,
                                                                             2 * np.pi))
    assert -np.pi <= f[0, 1] <= np.pi
    assert f[0, 2] == pytest.approx(a2 / a1)


def test_weighted_plane_recovers_coefficients():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 3))
    y = -1.5 + feats @ np.array([-5.0, 0.7, 1.0])
    w = rng.uniform(0.1, 3, 300)
    model = LinearRelation().fit(feats, y, w)
    assert model.coef_ == pytest.approx([-1.5, -5.0, 0.7, 1.0])
    assert model.predict(feats) == pytest.approx(y)
