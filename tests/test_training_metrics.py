"""Table-1 metrics: the weighted forms really use the weights, and agree with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from rrlfeh.training.metrics import NAMES, aggregate, regression_metrics


def test_weighted_metrics_use_the_weights():
    # a large error on one star with a small weight: wRMSE < RMSE and wMAE < MAE
    y = np.array([-1.5, -1.0, -2.0, -0.5])
    pred = np.array([-1.5, -1.0, -2.0, 0.5])
    w = np.array([1.0, 1.0, 1.0, 0.1])
    m = regression_metrics(y, pred, w)
    assert m["rmse"] == pytest.approx(np.sqrt(1.0 / 4))
    assert m["wrmse"] == pytest.approx(np.sqrt(0.1 / 3.1))
    assert m["wmae"] == pytest.approx(0.1 / 3.1)
    assert m["wrmse"] < m["rmse"] and m["wmae"] < m["mae"]


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.normal(-1.5, 0.5, 200)
    pred = y + rng.normal(0, 0.2, 200)
    w = rng.uniform(0.2, 5.0, 200)
    m = regression_metrics(y, pred, w)
    assert m["r2"] == pytest.approx(r2_score(y, pred))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert m["wrmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred, sample_weight=w)))
    assert m["wmae"] == pytest.approx(mean_absolute_error(y, pred, sample_weight=w))
    assert m["n"] == 200
    assert m["wrmse"] != pytest.approx(m["rmse"], rel=1e-3)


def test_unit_weights_make_weighted_equal_plain():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    pred = np.array([0.5, 1.0, 1.0, 3.5])
    m = regression_metrics(y, pred)
    assert m["wrmse"] == pytest.approx(m["rmse"]) and m["wmae"] == pytest.approx(m["mae"])


def test_aggregate_is_mean_and_std_over_folds():
    folds = [{k: v for k in NAMES} for v in (1.0, 2.0, 3.0)]
    agg = aggregate(folds)
    assert set(agg) == set(NAMES)
    assert agg["rmse"] == {"mean": pytest.approx(2.0), "std": pytest.approx(np.sqrt(2 / 3))}


@pytest.mark.parametrize("y, pred, w, match", [
    ([1.0, 2.0], [1.0], None, "must be equal"),
    ([1.0], [1.0], None, "at least 2"),
    ([1.0, np.nan], [1.0, 2.0], None, "finite"),
    ([1.0, 2.0], [1.0, 2.0], [-1.0, 1.0], "weights"),
])
def test_bad_input_is_refused(y, pred, w, match):
    with pytest.raises(ValueError, match=match):
        regression_metrics(np.array(y), np.array(pred), None if w is None else np.array(w))
    with pytest.raises(ValueError, match="no folds"):
        aggregate([])
