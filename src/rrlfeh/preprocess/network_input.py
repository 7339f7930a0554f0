"""The network's input from preprocessed curves: the one place that builds it, for training
(stage `preprocess`), batch scoring and the served model alike.

Per step the paper's two channels (eq. 4): the standardised smooth magnitude and phase x period.
Optional per-star channels, the same value at every step, give the network what per-curve
standardisation removes or what the classical relations use: the period, φ31 and R21 of the
Fourier fit of the star's own epochs (`rrlfeh.lightcurve.features`, the fit the classical
relations are measured on; the smooth curve's where the epochs are too few for a 3-harmonic fit),
φ31's uncertainty, and the smooth curve's peak-to-peak amplitude. `star_values` gives them (and
the fit qualities `feh_std` grows with), so training, scoring, serving and the baselines see the
same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rrlfeh.preprocess.curves import ProcessedCurves

# the paper's two channels of every step (eq. 4): the network sees the period through the second
CHANNELS: tuple[str, str] = ("standardised_mag", "phase_x_period_d")
# the second channel of a model for curves without a period (e.g. DG22): the phase alone
PHASE_ONLY = "phase"
# per-star channels (constant along the curve) that may follow them
SCALAR_CHANNELS: tuple[str, ...] = ("period_d", "phi31", "r21", "amplitude_mag",
                                     "phi31_error", "phi31_template", "r21_template")
# φ31 (cosine convention, m = Σ A_k cos(2πkΦ + φ_k)) is given relative to this centre, wrapped
# to ±π: RRab lie at 1.6-2.9 rad and RRc at 2.2-5.1 rad (synthetic and real Gaia G curves),
# all far from the cut at 3.3 ± π.
PHI31_CENTRE = 3.3
# φ31's uncertainty where the fit gives none (too few epochs for 3 harmonics): no information
PHI31_ERROR_UNKNOWN = 1.0  # rad


def fourier_scalars(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(φ31 − PHI31_CENTRE wrapped to ±π, R21) of curves (N, n_points) uniform in phase."""
    coef = np.fft.rfft(np.asarray(curves, dtype=float), axis=1)[:, 1:4]
    amp, phase = np.abs(coef), np.angle(coef)
    phi31 = np.angle(np.exp(1j * (phase[:, 2] - 3 * phase[:, 0] - PHI31_CENTRE)))
    return phi31, amp[:, 1] / np.maximum(amp[:, 0], 1e-12)


def centred_phi31(phi31: np.ndarray) -> np.ndarray:
    """φ31 (rad, cosine convention) as the network and the relations take it: − PHI31_CENTRE,
    wrapped to ±π."""
    return np.angle(np.exp(1j * (np.asarray(phi31, float) - PHI31_CENTRE)))


def star_values(pc: ProcessedCurves) -> dict[str, np.ndarray]:
    """The per-star channels' values of processed curves (SCALAR_CHANNELS, all finite where the
    period is): φ31 (− PHI31_CENTRE, wrapped to ±π) and R21 of the Fourier fit, else of the
    smooth curve; φ31's error clipped to PHI31_ERROR_UNKNOWN (that value where unknown); φ31 and
    R21 of the dense curves' shapes (`rrlfeh.lightcurve.templates`), the fit's where none."""
    smooth_phi31, smooth_r21 = fourier_scalars(pc.curves)
    fit_phi31 = centred_phi31(pc.phi31)
    has_fit = np.isfinite(fit_phi31) & np.isfinite(pc.r21)
    phi31 = np.where(has_fit, fit_phi31, smooth_phi31)
    r21 = np.where(has_fit, pc.r21, smooth_r21)
    templates = template_values(pc.phi31_template, pc.r21_template, phi31, r21)
    return {"period_d": np.asarray(pc.period, float), "phi31": phi31, "r21": r21,
            "amplitude_mag": np.asarray(pc.amplitude, float),
            "phi31_error": clipped_phi31_error(pc.phi31_error, has_fit),
            "phi31_disagreement": phi31_disagreement(phi31, smooth_phi31,
                                                     templates["phi31_template"]),
            **templates}


def clipped_phi31_error(error: np.ndarray, has_fit: np.ndarray) -> np.ndarray:
    """φ31's error of the Fourier fit (rad) clipped to PHI31_ERROR_UNKNOWN, that value where
    the fit has none: the channel's value, and the fit quality `feh_std` grows with."""
    err = np.asarray(error, float)
    ok = np.asarray(has_fit, bool) & np.isfinite(err)
    return np.where(ok, np.minimum(err, PHI31_ERROR_UNKNOWN), PHI31_ERROR_UNKNOWN)


def phi31_disagreement(phi31: np.ndarray, smooth_phi31: np.ndarray,
                       phi31_template: np.ndarray) -> np.ndarray:
    """How far the curve's other φ31 estimates lie from its φ31 (rad, all centred): the smooth
    curve's and the dense shapes' (`template_values`), in quadrature, 0 where one is the value
    itself or unknown. A second fit quality `feh_std` grows with: where a curve's estimates
    disagree its φ31 is unsure, whatever the fit's formal error says."""
    phi31 = np.asarray(phi31, float)

    def apart(other: np.ndarray) -> np.ndarray:
        d = np.abs(np.angle(np.exp(1j * (phi31 - np.asarray(other, float)))))
        return np.where(np.isfinite(d), d, 0.0)

    return np.hypot(apart(smooth_phi31), apart(phi31_template))


def template_values(phi31_template: np.ndarray | None, r21_template: np.ndarray | None,
                    phi31: np.ndarray, r21: np.ndarray) -> dict[str, np.ndarray]:
    """phi31_template (centred like `phi31`) and r21_template of the dense shapes
    (`rrlfeh.lightcurve.templates.bank_features`), the fit's centred `phi31` and `r21` where
    they have none."""
    nan = np.full(len(phi31), np.nan)
    t_phi31 = centred_phi31(nan if phi31_template is None else phi31_template)
    t_r21 = nan if r21_template is None else np.asarray(r21_template, float)
    has_t = np.isfinite(t_phi31) & np.isfinite(t_r21)
    return {"phi31_template": np.where(has_t, t_phi31, phi31),
            "r21_template": np.where(has_t, t_r21, r21)}


def relation_values(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`star_values` under the names the relations read (period, phi31, r21, amplitude)."""
    return {**values, "period": values["period_d"], "amplitude": values["amplitude_mag"]}


def check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """The channel list, validated: the paper's two first (or the magnitude and the phase alone,
    for curves without periods), then known per-star channels."""
    channels = tuple(channels)
    if (len(channels) < 2 or channels[0] != CHANNELS[0]
            or channels[1] not in (CHANNELS[1], PHASE_ONLY)
            or any(c not in SCALAR_CHANNELS for c in channels[2:])
            or len(set(channels)) != len(channels)):
        raise ValueError(f"network channels must be {list(CHANNELS)} (or {CHANNELS[0]!r}, "
                         f"{PHASE_ONLY!r} for curves without periods) followed by any of "
                         f"{list(SCALAR_CHANNELS)}, each once; got {list(channels)}")
    return channels


def uses_period(channels: Sequence[str]) -> bool:
    """Whether a model of these channels needs each curve's period."""
    return channels[1] == CHANNELS[1] or "period_d" in channels


def network_input(pc: ProcessedCurves, channels: Sequence[str] = CHANNELS,
                  values: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """(N, n_points, len(channels)) float32 in the order of `channels`; `values`: the curves'
    `star_values` when the caller has them already (computed here otherwise)."""
    channels = check_channels(channels)
    n, steps = pc.curves.shape
    per_star = {} if len(channels) <= 2 else star_values(pc) if values is None else values
    out = np.empty((n, steps, len(channels)), np.float32)
    out[..., 0] = pc.curves
    out[..., 1] = pc.time_in_cycle if channels[1] == CHANNELS[1] else pc.phase_grid[None, :]
    for i, name in enumerate(channels[2:], 2):
        out[..., i] = np.asarray(per_star[name], np.float32)[:, None]
    return out
