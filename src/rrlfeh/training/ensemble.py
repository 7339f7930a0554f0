"""The final model of one type: the K-fold models kept together as an ensemble.

The prediction is the mean over members and the spread (standard deviation over members) is the
per-star model uncertainty. `predict(..., fused=True)` runs all members as one XLA-compiled
TensorFlow program (`StackedGRU`) where they are the paper's GRU chain, else as one Keras model.
A folder holds the members (.keras) and manifest.json (input shape, network, members,
cross-validated figures), so it can be loaded without the training code state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrlfeh.training.model import SEQUENCE_CHANNELS

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


@dataclass
class Ensemble:
    """Member models and their manifest; predict() gives (mean, spread) per curve."""

    models: Sequence[Any]
    manifest: dict[str, Any]
    _fused: Any = field(default=None, repr=False)
    _stacked: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, folder: str | Path) -> Ensemble:
        """Read manifest.json and every member it lists."""
        import keras

        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        models = [keras.models.load_model(folder / name, compile=False)
                  for name in manifest["members"]]
        if not models:
            raise ValueError(f"{folder}: the ensemble has no members")
        return cls(models, manifest)

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.manifest["input_shape"])  # type: ignore[return-value]

    def fused(self) -> Any:
        """All members as one Keras model (one input, one column a member): a single call per
        batch instead of one per member, with the members' own weights (the same numbers)."""
        if self._fused is None:
            import keras

            inp = keras.Input(shape=self.input_shape, name="curve")
            outs = []
            for i, member in enumerate(self.models):
                def rename(layer, i=i):
                    return layer.__class__.from_config({**layer.get_config(),
                                                        "name": f"m{i}_{layer.name}"})
                clone = keras.models.clone_model(member, input_tensors=inp,
                                                 clone_function=rename)
                clone.set_weights(member.get_weights())
                outs.append(clone.outputs[0])
            out = outs[0] if len(outs) == 1 else keras.layers.Concatenate(name="members")(outs)
            self._fused = keras.Model(inp, out, name="ensemble")
        return self._fused

    def stacked(self) -> StackedGRU | None:
        """The members as one TensorFlow program with their weights stacked (`StackedGRU`),
        or None where the members are not a chain of GRUs and a Dense(1) it can run."""
        if self._stacked is None:
            self._stacked = StackedGRU.from_members(self.models) or False
        return self._stacked or None

    def member_predictions(self, x: np.ndarray, batch_size: int = 1024,
                           fused: bool = False, engine: str = "auto") -> np.ndarray:
        """(members, N) predictions; `fused` runs them as one program: `engine` 'stacked'
        (`StackedGRU`, 'auto' takes it where the members allow) or 'keras' (the `fused` model
        through Keras predict)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"curves of shape (N, {self.input_shape[0]}, "
                             f"{self.input_shape[1]}) expected, got {x.shape}")
        if len(x) == 0:
            return np.empty((len(self.models), 0), np.float32)
        if engine not in ("auto", "stacked", "keras"):
            raise ValueError(f"engine must be auto, stacked or keras, got {engine!r}")
        if fused and engine != "keras":
            stacked = self.stacked()
            if stacked is not None:
                return stacked(x, batch_size)
            if engine == "stacked":
                raise ValueError("these members cannot be stacked (not a chain of GRUs and a "
                                 "Dense(1) on the TensorFlow backend): use engine 'keras'")
        if fused:
            p = self.fused().predict(x, batch_size=batch_size, verbose=0)
            return np.asarray(p, np.float32).reshape(len(x), -1).T
        return np.stack([m.predict(x, batch_size=batch_size, verbose=0).reshape(-1)
                         for m in self.models])

    def total_error(self, spread: np.ndarray, n_epochs: np.ndarray | None = None,
                    period_derived: np.ndarray | None = None,
                    quality: Mapping[str, np.ndarray] | np.ndarray | None = None
                    ) -> np.ndarray:
        """Per-star [Fe/H] error: the spread and the residual scatter of the out-of-fold
        predictions that the spread does not explain, in quadrature: per bin of epoch counts
        where the manifest has `error_bins` (`served.residual_scales`: the bin's scatter, and
        its `quality_scale`s times each curve's fit qualities where both are given; `quality`:
        the curves' star values by name (the manifest's `quality` names are read) or their
        columns in that order;
        for the rows flagged in `period_derived`, the bin's `sigma_period_derived` where it has
        one: `period_error.derived_sigmas`), else it falls with the number of epochs where the
        manifest has its `residual_model` (see `residual_model`) and `n_epochs` is given, else
        it is the type's `residual_sigma`."""
        spread = np.asarray(spread, dtype=float)
        rm = self.manifest.get("residual_model")
        eb = self.manifest.get("error_bins")
        if eb is not None and n_epochs is not None:  # calibrated per bin of epoch counts
            from rrlfeh.training.served import bin_index, quality_matrix, quality_spread

            b = bin_index(n_epochs, eb["edges"])
            if quality is None and np.any(np.asarray(eb.get("quality_scale") or [], float)):
                raise ValueError("feh_std of this model grows with the fit's quality "
                                 f"({eb.get('quality')}): pass it")
            if isinstance(quality, Mapping):
                quality = quality_matrix(quality, eb.get("quality", "phi31_error"))
            spread = quality_spread(spread, quality, eb.get("quality_scale"), b)
            var = np.asarray(eb["sigma"], float)[b] ** 2
            if period_derived is not None and "sigma_period_derived" in eb:
                derived = np.asarray(period_derived, bool)
                var = np.where(derived, np.asarray(eb["sigma_period_derived"], float)[b] ** 2,
                               var)
        elif rm is not None and n_epochs is not None:
            n = np.maximum(np.asarray(n_epochs, dtype=float), 1.0)
            var = rm["floor"] ** 2 + rm["scale"] ** 2 * rm["pivot"] / n
        else:
            var = float(self.manifest.get("residual_sigma", 0.0)) ** 2
        return np.sqrt(spread**2 + var)

    def predict(self, x: np.ndarray, batch_size: int = 1024, fused: bool = False,
                engine: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """(mean [Fe/H], spread over members) per curve."""
        p = self.member_predictions(x, batch_size, fused, engine)
        spread = p.std(axis=0, ddof=1) if len(p) > 1 else np.zeros(p.shape[1])
        return p.mean(axis=0), spread


def residual_model(n_epochs: np.ndarray, residual: np.ndarray, spread: np.ndarray,
                   pivot: float = 50.0) -> dict[str, float]:
    """The out-of-fold residual variance the members' spread does not explain, as a function of
    the number of epochs: floor² + scale² · pivot / N (a φ31 estimated from N epochs has a
    variance ~1/N), fitted by non-negative least squares to residual² − spread²."""
    from scipy.optimize import nnls

    n = np.maximum(np.asarray(n_epochs, dtype=float), 1.0)
    target = np.asarray(residual, float) ** 2 - np.asarray(spread, float) ** 2
    coef, _ = nnls(np.column_stack([np.ones_like(n), pivot / n]), target)
    return {"floor": float(np.sqrt(coef[0])), "scale": float(np.sqrt(coef[1])),
            "pivot": float(pivot)}


class StackedGRU:
    """Members of one architecture (GRU blocks, Dropout, Dense(1)) run as one TensorFlow
    program, compiled by XLA (`jit_compile`): all layers in one loop over the steps (the state
    of every layer is kept, never a sequence), and per layer and step one batched matmul for
    all members, of [input, state] by the member's weights [[W_z W_r W_h 0], [U_z U_r 0 U_h]]
    (so the reset gate still acts after the recurrent matmul, Keras' reset_after) with the
    cell's own activations and Keras' update `z * h + (1 - z) * hh`. The members' numbers to
    float32 round-off (a few 1e-7 dex); on 2 CPU cores about 5x the fused Keras model
    (benchmarks/ensemble_engines.py).

    With a skip path (`build_model`'s `skip`) the first step's per-star channels join the last state
    in the Dense. XLA compiles once per batch shape (about a second): a batch is cut into
    `batch_size` rows and a rest padded to one of a few sizes (`padded_size`), so any number of
    curves needs at most about 25 shapes. Where XLA cannot run the program the same program runs
    without it. `from_members` gives None for members it does not recognise (another layer,
    go_backwards, reset_after False, another backend): the caller falls back to Keras.
    """

    def __init__(self, layers: list[dict[str, Any]], dense: tuple[np.ndarray, np.ndarray],
                 input_shape: tuple[int, int], n_members: int, jit_compile: bool = True,
                 skip: bool = False) -> None:
        import tensorflow as tf

        self.n_members = n_members
        self.skip = skip
        self.input_shape = input_shape
        self.jit_compile = jit_compile
        self._layers = [{k: tf.constant(v) if isinstance(v, np.ndarray) else v
                         for k, v in layer.items()} for layer in layers]
        self._dense = tuple(tf.constant(w) for w in dense)
        self._run = self._function(jit_compile)

    def _function(self, jit_compile: bool):
        import tensorflow as tf

        return tf.function(self._program, jit_compile=jit_compile, input_signature=[
            tf.TensorSpec((None, *self.input_shape), tf.float32)])

    @staticmethod
    def padded_size(n: int, batch_size: int) -> int:
        """The rows a batch of `n` (<= batch_size) curves runs as: the next power of two up to
        256, then the next multiple of 256, never above batch_size."""
        if n >= batch_size:
            return batch_size
        size = 1 << max(0, int(n - 1).bit_length()) if n <= 256 else -(-n // 256) * 256
        return min(size, batch_size)

    @classmethod
    def from_members(cls, models: Sequence[Any], jit_compile: bool = True) -> StackedGRU | None:
        """The stacked program of `models`, or None where they are not all the same chain of
        GRU (+ Dropout) blocks ending in a linear Dense(1) (with or without the skip path)."""
        import keras

        if keras.backend.backend() != "tensorflow" or not models:
            return None
        chains = [_gru_chain(m) for m in models]
        if any(c is None for c in chains):
            return None
        shape = tuple(models[0].inputs[0].shape[1:])
        if any(tuple(m.inputs[0].shape[1:]) != shape for m in models) or len(shape) != 2:
            return None
        signature = [(g.units, g.cell.activation, g.cell.recurrent_activation)
                     for g in chains[0][0]]
        if any([(g.units, g.cell.activation, g.cell.recurrent_activation) for g in c[0]]
               != signature for c in chains):
            return None
        layers = []
        for i, (units, act, rec_act) in enumerate(signature):
            grus = [c[0][i] for c in chains]
            kernel, recurrent, bias = (np.stack([np.asarray(g.get_weights()[j], np.float32)
                                                 for g in grus]) for j in range(3))
            n_in = kernel.shape[1]
            weights = np.zeros((len(models), n_in + units, 4 * units), np.float32)
            weights[:, :n_in, :3 * units] = kernel                                # x: z, r, h
            weights[:, n_in:, :2 * units] = recurrent[:, :, :2 * units]           # state: z, r
            weights[:, n_in:, 3 * units:] = recurrent[:, :, 2 * units:]           # state: h
            bias_in, bias_rec = bias[:, 0:1, :], bias[:, 1:2, :]
            layers.append({"units": units, "activation": act, "recurrent_activation": rec_act,
                           "weights": weights,
                           "bias": np.concatenate([bias_in[..., :2 * units]
                                                   + bias_rec[..., :2 * units],
                                                   bias_in[..., 2 * units:],
                                                   bias_rec[..., 2 * units:]], axis=-1)})
        if any(c[2] != chains[0][2] for c in chains):
            return None
        w = np.stack([np.asarray(c[1].get_weights()[0], np.float32) for c in chains])
        b = np.stack([np.asarray(c[1].get_weights()[1], np.float32) for c in chains])[:, None]
        return cls(layers, (w, b), shape, len(models), jit_compile,  # type: ignore[arg-type]
                   skip=chains[0][2])

    def _program(self, x):
        """(N, steps, channels) -> (members, N)."""
        import tensorflow as tf

        n = tf.shape(x)[0]
        steps, channels = self.input_shape
        seq = tf.TensorArray(tf.float32, size=steps).unstack(tf.transpose(x, [1, 0, 2]))
        states = tuple(tf.zeros((self.n_members, n, layer["units"]), tf.float32)
                       for layer in self._layers)

        def step(t, states):
            # the same input for every member
            inp = tf.broadcast_to(seq.read(t)[None], (self.n_members, n, channels))
            new = []
            for layer, h in zip(self._layers, states, strict=True):
                u = layer["units"]
                g = tf.matmul(tf.concat([inp, h], axis=-1), layer["weights"]) + layer["bias"]
                z = layer["recurrent_activation"](g[..., :u])
                r = layer["recurrent_activation"](g[..., u:2 * u])
                hh = layer["activation"](g[..., 2 * u:3 * u] + r * g[..., 3 * u:])
                h = z * h + (1 - z) * hh
                new.append(h)
                inp = h
            return t + 1, tuple(new)

        _, states = tf.while_loop(lambda t, _: t < steps, step, (tf.constant(0), states),
                                  parallel_iterations=1)
        w, b = self._dense
        units = self._layers[-1]["units"]
        out = tf.matmul(states[-1], w[:, :units]) + b
        if self.skip:  # the per-star channels straight to the output (`build_model`)
            first = tf.broadcast_to(x[None, :, 0, SEQUENCE_CHANNELS:],
                                    (self.n_members, n, channels - SEQUENCE_CHANNELS))
            out = out + tf.matmul(first, w[:, units:])
        return out[..., 0]

    def __call__(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(members, N) predictions of curves `x` (N, steps, channels), `batch_size` at a time."""
        x = np.asarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.empty((self.n_members, 0), np.float32)
        batch_size = max(1, int(batch_size))
        out = []
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size]
            size = self.padded_size(len(batch), batch_size) if self.jit_compile else len(batch)
            if size > len(batch):
                batch = np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]),
                                                        np.float32)])
            out.append(self._call(batch)[:, :min(batch_size, len(x) - i)])
        return np.concatenate(out, axis=1)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        try:
            return self._run(batch).numpy()
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError,
                tf.errors.NotFoundError, tf.errors.InternalError) as exc:
            if not self.jit_compile:
                raise
            log.warning("XLA cannot compile the stacked ensemble (%s); running it without XLA",
                        str(exc).splitlines()[0][:200])
            self.jit_compile = False
            self._run = self._function(False)
            return self._run(batch).numpy()


def _producer(tensor: Any) -> Any:
    """The layer that made a Keras tensor (InputLayer for a model input)."""
    return tensor._keras_history.operation


def _gru_chain(model: Any) -> tuple[list[Any], Any, bool] | None:
    """(GRU layers, final Dense, skip) of a model that is input -> GRU (+ Dropout) ... ->
    Dense(1) linear, where with `skip` the Dense also takes the input's first step
    (Cropping1D -> Flatten -> Concatenate after the last block, `build_model`); None for
    anything else. Walks back from the output, so layer order does not matter."""
    import keras
    from keras import layers as kl

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    inp = model.inputs[0]
    dense = _producer(model.outputs[0])
    if not (isinstance(dense, kl.Dense) and dense.units == 1 and dense.use_bias
            and dense.activation is keras.activations.linear and dense.dtype == "float32"):
        return None
    t, skip = dense.input, False
    joined = _producer(t)
    if isinstance(joined, kl.Concatenate):
        parts = joined.input
        if len(parts) != 2 or joined.axis not in (-1, 1):
            return None
        # Flatten <- Cropping1D (the sequence channels) <- Permute <- Cropping1D (first step)
        flat = _producer(parts[1])
        per_star = _producer(flat.input) if isinstance(flat, kl.Flatten) else None
        permute = (_producer(per_star.input) if isinstance(per_star, kl.Cropping1D)
                   else None)
        crop = _producer(permute.input) if isinstance(permute, kl.Permute) else None
        steps = int(inp.shape[1])
        if (not isinstance(crop, kl.Cropping1D) or tuple(crop.cropping) != (0, steps - 1)
                or crop.input is not inp or tuple(permute.dims) != (2, 1)
                or tuple(per_star.cropping) != (SEQUENCE_CHANNELS, 0)):
            return None
        t, skip = parts[0], True
    grus = []
    while t is not inp:
        layer = _producer(t)
        if isinstance(layer, kl.Dropout):
            t = layer.input
            continue
        if not isinstance(layer, kl.GRU):
            return None
        cfg = layer.get_config()
        if (not cfg.get("reset_after", True) or not cfg.get("use_bias", True)
                or cfg.get("go_backwards") or cfg.get("stateful") or layer.dtype != "float32"):
            return None
        grus.append(layer)
        t = layer.input
    grus.reverse()
    if not grus or any(not g.return_sequences for g in grus[:-1]) or grus[-1].return_sequences:
        return None
    return grus, dense, skip
