"""The classical baseline's features and fit."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.training.baseline import LinearRelation, choose_stack


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


def test_gate_serves_the_network_where_it_is_better_and_the_relation_where_it_is_not():
    rng = np.random.default_rng(1)
    y, truth, relation = _oof_case(rng)
    good = y + rng.normal(0, 0.005, len(y))      # a network that learnt what the line cannot
    bad = relation + rng.normal(0, 0.4, len(y))  # the line's information and only noise beside
    win = choose_stack(y, good, relation)
    assert win["served"] == "network" and win["weight"] == 1.0
    lose = choose_stack(y, bad, relation)
    assert lose["served"] == "relation" and lose["weight"] == 0.0
    assert "relation is served" in lose["reason"]
    # both informative and independent: a stack, better than either alone
    mid = truth + rng.normal(0, 0.12, len(y))
    both = choose_stack(y, mid, relation)
    assert both["served"] == "stack" and 0.3 < both["weight"] < 0.7
    assert both["oof_rmse"] < min(both["network_oof_rmse"], both["relation_oof_rmse"])


def test_the_chosen_stack_is_never_worse_than_the_relation_out_of_fold():
    rng = np.random.default_rng(2)
    for _ in range(20):
        y, truth, relation = _oof_case(rng, 100)
        net = truth + rng.normal(rng.normal(0, 0.2), rng.uniform(0.01, 0.6), len(y))
        s = choose_stack(y, net, relation)
        independent = np.sqrt(np.mean((s["weight"] * net + (1 - s["weight"]) * relation - y)
                                      ** 2))
        assert s["oof_rmse"] == pytest.approx(independent)
        assert s["oof_rmse"] <= np.sqrt(np.mean((relation - y) ** 2)) + 1e-12
