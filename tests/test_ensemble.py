"""The ensemble's fast paths give the members' own numbers: the fused Keras model and the
stacked XLA program against each member's Keras predict, at batch sizes that need padding."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.training.ensemble import Ensemble, StackedGRU
from rrlfeh.training.model import NetworkSpec, build_model

CHANNELS = {False: 2, True: 6}  # the paper's network; with per-star channels and the skip path


@pytest.fixture(scope="module", params=[False, True], ids=["paper", "skip"])
def ensemble(request, tmp_path_factory) -> Ensemble:
    import keras

    keras.utils.set_random_seed(3)
    skip = request.param
    spec = NetworkSpec(units=(6, 5, 3), dropout=(0.2, 0.2, 0.1), skip=skip)
    models = [build_model((40, CHANNELS[skip]), spec) for _ in range(3)]
    for m in models:  # trained-looking weights: random, larger than the initialisers'
        m.set_weights([w + np.random.default_rng(1).normal(0, 0.3, w.shape).astype(w.dtype)
                       for w in m.get_weights()])
    folder = tmp_path_factory.mktemp("members")  # as scoring meets them: saved and reloaded
    for i, m in enumerate(models):
        m.save(folder / f"m{i}.keras")
    models = [keras.models.load_model(folder / f"m{i}.keras", compile=False) for i in range(3)]
    return Ensemble(models, {"input_shape": [40, CHANNELS[skip]], "residual_sigma": 0.1})


def test_skip_path_is_recognised(ensemble: Ensemble):
    stacked = ensemble.stacked()
    assert stacked is not None
    assert stacked.skip == (ensemble.input_shape[1] > 2)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_fast_paths_equal_the_member_loop(ensemble: Ensemble, n: int):
    x = np.random.default_rng(n).normal(size=(n, *ensemble.input_shape)).astype(np.float32)
    loop = ensemble.member_predictions(x, batch_size=128)
    for engine in ("keras", "stacked"):
        fast = ensemble.member_predictions(x, batch_size=128, fused=True, engine=engine)
        assert fast.shape == (3, n)
        assert np.abs(fast - loop).max() < 1e-5, engine
    mean, spread = ensemble.predict(x, fused=True)
    assert np.allclose(mean, loop.mean(axis=0), atol=1e-5)
    assert np.allclose(spread, loop.std(axis=0, ddof=1), atol=1e-5)


def test_other_architectures_fall_back_to_keras():
    import keras

    inp = keras.Input((10, 2))
    out = keras.layers.Dense(1)(keras.layers.LSTM(3)(inp))
    ens = Ensemble([keras.Model(inp, out)], {"input_shape": [10, 2]})
    assert ens.stacked() is None
    x = np.zeros((4, 10, 2), np.float32)
    assert np.allclose(ens.member_predictions(x, fused=True), ens.member_predictions(x))
    with pytest.raises(ValueError, match="cannot be stacked"):
        ens.member_predictions(x, fused=True, engine="stacked")


def test_padded_batch_sizes_are_few():
    sizes = {StackedGRU.padded_size(n, 4096) for n in range(1, 4097)}
    assert len(sizes) <= 25 and all(s >= 1 for s in sizes)
    assert all(StackedGRU.padded_size(n, 4096) >= n for n in range(1, 4097))


def test_residual_model_recovers_an_error_that_falls_with_the_epochs():
    from rrlfeh.training.ensemble import residual_model

    rng = np.random.default_rng(5)
    n = rng.integers(20, 150, 20_000)
    spread = np.full(n.size, 0.02)
    sigma = np.sqrt(0.05**2 + 0.1**2 * 50 / n + spread**2)
    rm = residual_model(n, rng.normal(0, sigma), spread)
    assert rm["floor"] == pytest.approx(0.05, rel=0.15)
    assert rm["scale"] == pytest.approx(0.1, rel=0.05)
    ens = Ensemble([], {"residual_sigma": 0.3, "residual_model": rm})
    err = ens.total_error(spread[:3], n[:3])
    assert err == pytest.approx(sigma[:3], rel=0.05)
    assert ens.total_error(spread[:3]) == pytest.approx(np.hypot(0.02, 0.3))  # no epochs given
