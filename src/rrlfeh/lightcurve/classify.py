"""RR Lyrae type (RRab / RRc) from the Bailey diagram (period, G peak-to-peak amplitude).

Separator of Belokurov et al. 2018 for Gaia G amplitudes:
A(P) = -2.477 - 22.046 log P - 30.876 (log P)^2 - 0.15. Overtone pulsators (RRc) sit at short
periods below the curve; fundamental-mode (RRab) stars above it or at long periods. The curve
falls below zero amplitude near 0.28 d, so periods under `min_rrab_period` are RRc outright.
"""

from __future__ import annotations

import numpy as np


def bailey_separator(period: np.ndarray | float) -> np.ndarray:
    """Belokurov et al. 2018 RRab/RRc separating amplitude (G mag) at `period` (d)."""
    logp = np.log10(np.asarray(period, float))
    return -2.477 - 22.046 * logp - 30.876 * logp**2 - 0.15


def classify_bailey(period: np.ndarray | float, amplitude: np.ndarray | float, *,
                    split_period: float = 0.42, min_rrab_period: float = 0.3) -> np.ndarray:
    """'RRab' or 'RRc' for each (period d, G peak-to-peak amplitude mag); '' where either input
    is not finite and positive. RRc when P < `min_rrab_period`, or P < `split_period` with the
    amplitude below the separator; RRab otherwise."""
    p = np.atleast_1d(np.asarray(period, float))
    a = np.atleast_1d(np.asarray(amplitude, float))
    p, a = np.broadcast_arrays(p, a)
    ok = np.isfinite(p) & np.isfinite(a) & (p > 0) & (a >= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rrc = ok & ((p < min_rrab_period)
                    | ((p < split_period) & (a < bailey_separator(np.where(ok, p, 1.0)))))
    out = np.where(rrc, "RRc", "RRab").astype(object)
    out[~ok] = ""
    return out
