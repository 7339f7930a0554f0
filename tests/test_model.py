"""The paper's network: its layers, penalties and the weighted loss as params.yaml says."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from rrlfeh.training.metrics import regression_metrics
from rrlfeh.training.model import NetworkSpec, build_model, predict

from conftest import REPO


def test_network_is_three_gru_dropout_blocks_and_a_linear_output():
    model_params = yaml.safe_load((REPO / "params.yaml").read_text())["model"]
    spec = NetworkSpec.from_params({**model_params, "skip": False})  # the paper's network
    assert spec.units == (20, 16, 8) and spec.dropout == (0.2, 0.2, 0.1)
    model = build_model((264, 2), spec)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "GRU", "Dropout", "GRU", "Dropout", "GRU", "Dropout", "Dense"]
    grus = [la for la in model.layers if type(la).__name__ == "GRU"]
    assert [g.units for g in grus] == [20, 16, 8]
    assert [g.return_sequences for g in grus] == [True, True, False]
    assert all(g.activation.__name__ == "tanh" for g in grus)
    assert grus[0].kernel_regularizer.l2 == pytest.approx(2e-6)
    assert grus[0].recurrent_regularizer.l1 == pytest.approx(2e-6)
    assert [la.rate for la in model.layers if type(la).__name__ == "Dropout"] == [0.2, 0.2, 0.1]
    dense = model.layers[-1]
    assert dense.units == 1 and dense.activation.__name__ == "linear"
    assert model.input_shape == (None, 264, 2) and model.output_shape == (None, 1)
    assert model.optimizer.__class__.__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_skip_path_carries_the_first_steps_channels_to_the_output():
    """With the GRU path's output weights at zero, the network is the linear relation
    a + c . x[:, 0, 2:] of the per-star channels, computed here independently."""
    spec = NetworkSpec(units=(4, 3, 2), dropout=(0.1, 0.1, 0.1), skip=True)
    model = build_model((30, 6), spec)
    dense = model.get_layer("feh")
    kernel, bias = dense.get_weights()
    assert kernel.shape == (2 + 4, 1)  # last GRU's units + the per-star channels
    coef = np.array([-5.0, 0.7, 1.0, 0.3], np.float32)
    dense.set_weights([np.concatenate([np.zeros(2, np.float32), coef])[:, None],
                       np.array([-1.5], np.float32)])
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 30, 6)).astype(np.float32)
    x[:, :, 2:] = rng.normal(size=(50, 1, 4))  # per-star channels: constant along the curve
    assert predict(model, x) == pytest.approx(-1.5 + x[:, 0, 2:] @ coef, abs=1e-5)
    x[:, 0, :2] += 3.0  # the curve channels at the first step do not take the linear path
    assert predict(model, x) == pytest.approx(-1.5 + x[:, 0, 2:] @ coef, abs=1e-5)


def test_keras_weighted_metrics_agree_with_ours():
    """The loss and wRMSE that Keras reports in fit/evaluate are the KDE-weighted ones."""
    import keras

    keras.utils.set_random_seed(0)  # the network's initial weights: an unseeded draw can leave
    rng = np.random.default_rng(0)  # wRMSE within 0.1 % of RMSE (seen once in CI)
    x = rng.normal(size=(64, 30, 2)).astype("float32")
    y = rng.normal(-1.5, 0.5, 64).astype("float32")
    w = rng.uniform(0.1, 4.0, 64).astype("float32")
    model = build_model((30, 2), NetworkSpec(units=(4, 3, 2), kernel_l2=0.0, recurrent_l1=0.0))
    got = model.evaluate(x, y, sample_weight=w, batch_size=64, verbose=0, return_dict=True)
    ours = regression_metrics(y, predict(model, x), w)
    assert got["wrmse"] == pytest.approx(ours["wrmse"], rel=1e-4)
    assert got["rmse"] == pytest.approx(ours["rmse"], rel=1e-4)
    assert got["wmae"] == pytest.approx(ours["wmae"], rel=1e-4)
    assert got["wrmse"] != pytest.approx(got["rmse"], rel=1e-3)
    # weighted MSE loss: sum(w * r^2) / N (Keras' sum-over-batch-size reduction)
    r = y - predict(model, x)
    assert got["loss"] == pytest.approx(float(np.sum(w * r**2) / len(y)), rel=1e-4)


def test_the_period_channel_changes_the_prediction():
    """The network sees phase x period: same shape, other period -> other [Fe/H]."""
    rng = np.random.default_rng(1)
    phase = np.linspace(0, 1, 40, endpoint=False)
    shape = np.sin(2 * np.pi * phase)
    x = np.stack([np.stack([shape, phase * p], -1) for p in (0.3, 0.7)]).astype("float32")
    model = build_model((40, 2), NetworkSpec(units=(4, 3, 2)))
    for layer in model.layers:  # non-trivial weights, deterministic
        layer.set_weights([rng.normal(0, 0.5, v.shape) for v in layer.get_weights()])
    p = predict(model, x)
    assert abs(p[0] - p[1]) > 1e-4


@pytest.mark.parametrize("kw, match", [
    ({"units": (20, 16), "dropout": (0.2, 0.2, 0.1)}, "one value a"),
    ({"dropout": (0.2, 1.2, 0.1)}, "bad units"),
    ({"learning_rate": 0.0}, "learning_rate"),
])
def test_bad_network_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        NetworkSpec(**kw)
    with pytest.raises(ValueError, match="unknown network settings"):
        NetworkSpec.from_params({"unit": [1, 2, 3]})


def test_spec_round_trips_through_json_values():
    spec = NetworkSpec(units=(16, 8, 4), dropout=(0.1, 0.4, 0.6), batch_size=64)
    assert NetworkSpec.from_params(spec.as_dict()) == spec


def test_warm_start_puts_the_skip_path_at_the_least_squares_plane():
    """Before any training, a warm-started network predicts the weighted least-squares plane of
    the per-star channels (fitted here independently with scikit-learn)."""
    from sklearn.linear_model import LinearRegression

    from rrlfeh.training.model import warm_start

    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 30, 6)).astype(np.float32)
    x[:, :, 2:] = rng.normal(size=(200, 1, 4))
    y = (-1.5 + x[:, 0, 2:] @ np.array([-2.0, 0.7, 1.0, 0.3]) + rng.normal(0, 0.1, 200))
    w = rng.uniform(0.5, 2.0, 200)
    model = build_model((30, 6), NetworkSpec(units=(4, 3, 2), dropout=(0.1, 0.1, 0.1),
                                             skip=True))
    assert warm_start(model, x, y, w)
    ref = LinearRegression().fit(x[:, 0, 2:], y, sample_weight=w).predict(x[:, 0, 2:])
    assert predict(model, x) == pytest.approx(ref, abs=1e-4)
    paper = build_model((30, 2), NetworkSpec(units=(4, 3, 2), dropout=(0.1, 0.1, 0.1)))
    assert not warm_start(paper, x[..., :2], y, w)
