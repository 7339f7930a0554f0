"""The classical baseline's features and fit."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.training.baseline import LinearRelation
from rrlfeh.training.served import best_weight


def test_weighted_plane_recovers_coefficients():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 3))
    y = -1.5 + feats @ np.array([-5.0, 0.7, 1.0])
    w = rng.uniform(0.1, 3, 300)
    model = LinearRelation().fit(feats, y, w)
    assert model.coef_ == pytest.approx([-1.5, -5.0, 0.7, 1.0])
    assert model.predict(feats) == pytest.approx(y)


def _oof_case(rng, n: int = 400):
    """Labels, a relation's out-of-fold predictions (0.12 dex off) and a truth to build
    networks from."""
    truth = rng.normal(-1.5, 0.5, n)
    y = truth + rng.normal(0, 0.03, n)
    relation = truth + rng.normal(0, 0.12, n)
    return y, truth, relation


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def _brute_force(y: np.ndarray, net: np.ndarray, rel: np.ndarray) -> tuple[float, float]:
    """(w, RMSE) of the best w·net + (1 − w)·rel over w = 0, 0.01, ..., 1, by brute force."""
    scores = {k / 100: _rmse(y, k / 100 * net + (1 - k / 100) * rel) for k in range(101)}
    w = min(scores, key=scores.get)
    return w, scores[w]


def test_the_network_gets_weight_one_where_it_is_better_and_zero_where_it_is_not():
    rng = np.random.default_rng(1)
    y, truth, relation = _oof_case(rng)
    good = y + rng.normal(0, 0.005, len(y))      # a network that learnt what the line cannot
    bad = relation + rng.normal(0, 0.4, len(y))  # the line's information and only noise beside
    assert best_weight(y, good, relation) == pytest.approx((1.0, _rmse(y, good)))
    assert best_weight(y, bad, relation) == pytest.approx((0.0, _rmse(y, relation)))
    # both informative and independent: a stack, better than either alone
    mid = truth + rng.normal(0, 0.12, len(y))
    w, best = best_weight(y, mid, relation)
    assert 0.3 < w < 0.7
    assert best < min(_rmse(y, mid), _rmse(y, relation))
    assert (w, best) == pytest.approx(_brute_force(y, mid, relation))


def test_the_chosen_weight_is_never_worse_than_the_relation_out_of_fold():
    rng = np.random.default_rng(2)
    for _ in range(20):
        y, truth, relation = _oof_case(rng, 100)
        net = truth + rng.normal(rng.normal(0, 0.2), rng.uniform(0.01, 0.6), len(y))
        w, best = best_weight(y, net, relation)
        assert (w, best) == pytest.approx(_brute_force(y, net, relation))
        assert best == pytest.approx(_rmse(y, w * net + (1 - w) * relation))
        assert best <= _rmse(y, relation) + 1e-12
