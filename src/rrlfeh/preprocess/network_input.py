"""The network's input from preprocessed curves: the one place that builds it, for training
(stage `preprocess`), batch scoring and the served model alike."""

from __future__ import annotations

import numpy as np

from rrlfeh.preprocess.curves import ProcessedCurves

# the two channels of every step (paper eq. 4): the network sees the period through the second
CHANNELS: tuple[str, str] = ("standardised_mag", "phase_x_period_d")


def network_input(pc: ProcessedCurves) -> np.ndarray:
    """(N, n_points, 2) float32: standardised smooth magnitude and phase x period (d)."""
    return np.stack([pc.curves, pc.time_in_cycle], axis=-1).astype(np.float32, copy=False)
