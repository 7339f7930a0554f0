"""The paper's network (Monti et al. 2025): three GRU + Dropout blocks, then Dense(1) linear.

Input per step is (standardised magnitude, phase x period), so the network sees the period
(paper eq. 4), optionally followed by per-star channels (period, φ31, R21, amplitude; the same
value at every step, `rrlfeh.preprocess.network_input`). With `skip`, the per-star channels
also reach the output Dense directly: a linear path that holds the classical (P, φ31, R21)
relation, to which the GRU blocks add what the shape of the curve tells beyond it; `warm_start`
starts that path at the least-squares plane of the training curves. Loss is the
weighted MSE (the KDE sample weights), optimiser Adam; training and validation also report
RMSE/MAE and their weighted forms so every epoch carries Table-1 numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

SEQUENCE_CHANNELS = 2  # magnitude and phase (x period): the curve; the channels after are per star


@dataclass(frozen=True)
class NetworkSpec:
    """Sizes, rates and penalties of one network (params.yaml `model`, or a Hyperband trial)."""

    units: tuple[int, ...] = (20, 16, 8)
    dropout: tuple[float, ...] = (0.2, 0.2, 0.1)
    activation: str = "tanh"
    kernel_l1: float = 0.0
    kernel_l2: float = 2e-6
    recurrent_l1: float = 2e-6
    recurrent_l2: float = 0.0
    learning_rate: float = 0.01
    batch_size: int = 256
    skip: bool = False              # linear path from the first step's channels to the output

    def __post_init__(self) -> None:
        if len(self.units) != len(self.dropout) or not self.units:
            raise ValueError(f"units {self.units} and dropout {self.dropout} need one value a "
                             "GRU block")
        if any(u < 1 for u in self.units) or any(not 0 <= r < 1 for r in self.dropout):
            raise ValueError(f"bad units {self.units} or dropout {self.dropout}")
        if self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError(f"bad learning_rate {self.learning_rate} or batch_size "
                             f"{self.batch_size}")

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> NetworkSpec:
        """From a mapping (params.yaml `model`, best_hparams.json); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(p) - names
        if unknown:
            raise ValueError(f"unknown network settings {sorted(unknown)}; known: {sorted(names)}")
        kw = dict(p)
        for k in ("units", "dropout"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists for the per-block settings)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["units"], d["dropout"] = list(self.units), list(self.dropout)
        return d


def build_model(input_shape: Sequence[int], spec: NetworkSpec):
    """The compiled network for curves of `input_shape` = (steps, channels)."""
    import keras
    from keras import layers, regularizers

    def penalty(l1: float, l2: float):
        return regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None

    inputs = keras.Input(shape=tuple(input_shape), name="curve")
    h = inputs
    last = len(spec.units) - 1
    for i, (units, rate) in enumerate(zip(spec.units, spec.dropout, strict=True)):
        h = layers.GRU(units, activation=spec.activation, return_sequences=i < last,
                       kernel_regularizer=penalty(spec.kernel_l1, spec.kernel_l2),
                       recurrent_regularizer=penalty(spec.recurrent_l1, spec.recurrent_l2),
                       name=f"gru_{i + 1}")(h)
        h = layers.Dropout(rate, name=f"dropout_{i + 1}")(h)
    if spec.skip:  # the per-star channels (2 onwards) of the first step, straight to the output
        first = layers.Cropping1D((0, int(input_shape[0]) - 1), name="first_step")(inputs)
        per_star = layers.Cropping1D((SEQUENCE_CHANNELS, 0), name="per_star")(
            layers.Permute((2, 1), name="channels_first")(first))
        h = layers.Concatenate(name="with_scalars")([h, layers.Flatten(name="scalars")(per_star)])
    outputs = layers.Dense(1, activation="linear", name="feh")(h)
    model = keras.Model(inputs, outputs, name="rrl_feh_gru")
    compile_model(model, spec.learning_rate)
    return model


def warm_start(model, x, y, weights=None) -> bool:
    """Start a network with the skip path at the classical relation: the output Dense's weights
    on the per-star channels are set to the (weighted) least-squares plane of the training
    curves, its weights on the GRU path to zero. Training then learns what the curves add to the
    relation instead of first rediscovering it (stacking network and relation). False (nothing
    changed) for a network without the skip path."""
    import numpy as np

    names = {layer.name for layer in model.layers}
    if "first_step" not in names:
        return False
    first = np.asarray(x, dtype=float)[:, 0, SEQUENCE_CHANNELS:]
    design = np.column_stack([np.ones(len(first)), first])
    sw = np.sqrt(np.ones(len(first)) if weights is None else np.asarray(weights, float))
    coef = np.linalg.lstsq(design * sw[:, None], np.asarray(y, float) * sw, rcond=None)[0]
    dense = model.get_layer("feh")
    kernel, bias = dense.get_weights()
    kernel = np.zeros_like(kernel)
    kernel[kernel.shape[0] - first.shape[1]:, 0] = coef[1:]
    dense.set_weights([kernel, np.full_like(bias, coef[0])])
    return True


def compile_model(model, learning_rate: float) -> None:
    """Adam + MSE (weighted by the sample weights given to fit); RMSE, MAE plain and weighted."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="mse",
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse"),
                 keras.metrics.MeanAbsoluteError(name="mae")],
        weighted_metrics=[keras.metrics.RootMeanSquaredError(name="wrmse"),
                          keras.metrics.MeanAbsoluteError(name="wmae")],
    )


def predict(model, x, batch_size: int = 1024):
    """Predicted [Fe/H], shape (N,)."""
    return model.predict(x, batch_size=batch_size, verbose=0).reshape(-1)
