"""The Hyperband search space and budget."""

from __future__ import annotations

import keras_tuner as kt
import numpy as np
import pytest

from rrlfeh.training.hyperband import GRUHyperModel, check_space, hyperband_budget
from rrlfeh.training.model import NetworkSpec

SPACE = {"units": [[16, 20, 32], [8, 16], [4, 8]], "dropout": [0.1, 0.2, 0.4, 0.6],
         "learning_rate": [0.001, 0.01, 0.1], "batch_size": [32, 64, 128, 256, 512],
         "kernel_l2": [0.0, 2e-6]}


def test_a_point_of_the_space_becomes_a_network():
    hm = GRUHyperModel((264, 2), NetworkSpec(), SPACE)
    hp = kt.HyperParameters()
    spec = hm.spec(hp)  # first call registers every hyperparameter at its default
    names = set(hp.values)
    assert names == {"units_1", "units_2", "units_3", "dropout_1", "dropout_2", "dropout_3",
                     "learning_rate", "batch_size", "kernel_l2"}
    assert hp._hps["dropout_2"][0].values == [0.1, 0.2, 0.4, 0.6]
    hp.values.update(units_1=32, dropout_3=0.6, learning_rate=0.1, batch_size=64)
    spec = hm.spec(hp)
    assert spec.units[0] == 32 and spec.dropout[2] == 0.6
    assert spec.learning_rate == 0.1 and spec.batch_size == 64
    assert spec.recurrent_l1 == NetworkSpec().recurrent_l1  # not searched: base value


@pytest.mark.parametrize("space, match", [
    ({"unit": [1]}, "unknown hyperparameters"),
    ({"dropout": []}, "non-empty list"),
    ({"units": [[16], [8]]}, "each of the 3 GRU blocks"),
])
def test_bad_space_is_refused(space, match):
    with pytest.raises(ValueError, match=match):
        check_space(space, NetworkSpec())


def test_budget_follows_keras_tuner_brackets():
    # max_epochs 9, factor 3: brackets of 9+3+1, 5+2 and 3 trials; epochs 75
    assert hyperband_budget(9, 3) == (23, 75)
    assert hyperband_budget(2, 2) == (5, 7)
    assert hyperband_budget(20, 3, iterations=2)[0] == 2 * hyperband_budget(20, 3)[0]


def test_trials_are_ranked_on_a_trailing_mean_not_one_lucky_epoch():
    from rrlfeh.training.hyperband import trailing_mean

    noisy = [1.0, 0.2, 1.0, 1.0, 0.6, 0.5, 0.55]
    smooth = trailing_mean(noisy, 3)
    assert smooth[:3] == pytest.approx([1.0, 0.6, 2.2 / 3])
    assert int(np.argmin(smooth)) == 6 and min(smooth) == pytest.approx(0.55)
    assert trailing_mean(noisy, 1) == noisy


def test_tune_without_training_arrays_names_the_folder(tmp_path):
    """A wrong --params folder or a missing preprocess is an error, not two skipped types."""
    from pathlib import Path

    import yaml

    from rrlfeh.stages import tune

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="no <type>.npz training arrays"):
        tune.run(tmp_path / "processed", params, tmp_path, tmp_path / "tune.json")
    assert not (tmp_path / "tune.json").exists()
