"""Classical [Fe/H] relations: published coefficients in their own conventions, exact refits."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.relations import RRAB_PUBLISHED


def by_name(prefix: str):
    return next(r for r in RRAB_PUBLISHED if r.name.startswith(prefix))


def test_published_values_by_hand():
    ib = by_name("Iorio")
    assert ib.predict([0.6], [2.0], [0.5])[0] == pytest.approx(-1.691)
    assert ib.predict([0.5], [2.5], [0.5])[0] == pytest.approx(-1.691 + 0.4722 + 0.3405)
    # written for the sine-series phi31 = ours (cosine) + pi
    hr = by_name("P-phi31")
    assert hr.predict([0.55], [2.2], [0.4])[0] == pytest.approx(
        -6.93 - 6.04 * 0.55 + 1.65 * (2.2 + np.pi))
    li = by_name("Li")
    assert li.predict([0.6], [2.0], [0.45])[0] == pytest.approx(-1.888)


def test_refit_recovers_a_noiseless_relation():
    rng = np.random.default_rng(0)
    p, phi, r21 = rng.uniform(0.45, 0.8, 200), rng.uniform(1.6, 2.8, 200), rng.uniform(0.3, 0.6,
                                                                                        200)
    feh = -1.5 - 5.0 * (p - 0.6) + 0.9 * (phi - 2.0) + 0.3 * (r21 - 0.45)
    fit = by_name("Li").refit(p, phi, r21, feh)
    assert np.allclose(fit.coef, [-1.5, -5.0, 0.9, 0.3], atol=1e-9)
    assert "refitted" in fit.name and np.allclose(fit.predict(p, phi, r21), feh)
