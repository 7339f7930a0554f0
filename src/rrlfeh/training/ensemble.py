"""The final model of one type: the K-fold models kept together as an ensemble.

The prediction is the mean over members and the spread (standard deviation over members) is the
per-star model uncertainty. A folder holds the members (.keras) and manifest.json (input shape,
network, members, cross-validated figures), so it can be loaded without the training code state.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"


@dataclass
class Ensemble:
    """Member models and their manifest; predict() gives (mean, spread) per curve."""

    models: Sequence[Any]
    manifest: dict[str, Any]
    _fused: Any = field(default=None, repr=False)

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

    def member_predictions(self, x: np.ndarray, batch_size: int = 1024,
                           fused: bool = False) -> np.ndarray:
        """(members, N) predictions; `fused` runs them as one model (see `fused`)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"curves of shape (N, {self.input_shape[0]}, "
                             f"{self.input_shape[1]}) expected, got {x.shape}")
        if len(x) == 0:
            return np.empty((len(self.models), 0), np.float32)
        if fused:
            p = self.fused().predict(x, batch_size=batch_size, verbose=0)
            return np.asarray(p, np.float32).reshape(len(x), -1).T
        return np.stack([m.predict(x, batch_size=batch_size, verbose=0).reshape(-1)
                         for m in self.models])

    def total_error(self, spread: np.ndarray) -> np.ndarray:
        """Per-star [Fe/H] error: the spread and the residual scatter of the out-of-fold
        predictions that the spread does not explain (manifest `residual_sigma`), in quadrature."""
        sigma = float(self.manifest.get("residual_sigma", 0.0))
        return np.sqrt(np.asarray(spread) ** 2 + sigma**2)

    def predict(self, x: np.ndarray, batch_size: int = 1024,
                fused: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean [Fe/H], spread over members) per curve."""
        p = self.member_predictions(x, batch_size, fused)
        spread = p.std(axis=0, ddof=1) if len(p) > 1 else np.zeros(p.shape[1])
        return p.mean(axis=0), spread
