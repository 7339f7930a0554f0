"""Fourier fit at a known period recovers amplitude, epoch of maximum, phi31 (with an honest
error), R21 and the intensity-averaged mean of a known curve."""

from __future__ import annotations

import numpy as np
import pytest
from test_period import fourier_model, simulate_gaia

from rrlfeh.lightcurve.fourier import choose_harmonics, fit_fourier, fit_fourier_clipped


def truth_of(lc: dict) -> dict:
    """Amplitude, epoch of maximum (one of them), phi31, r21, intensity mean of the true model."""
    p = lc["period"]
    tt = lc["epoch"] + np.arange(20000) / 20000 * p
    curve = fourier_model(tt, p, lc["epoch"], lc["mean"], lc["amplitudes"], lc["phases"])
    return dict(amplitude=curve.max() - curve.min(), epoch=tt[np.argmin(curve)],
                phi31=np.mod(lc["phases"][2] - 3 * lc["phases"][0], 2 * np.pi),
                r21=lc["amplitudes"][1] / lc["amplitudes"][0],
                mean_mag=-2.5 * np.log10(np.mean(10 ** (-0.4 * curve))))


def phase_diff(a: float, b: float, period: float) -> float:
    """|a - b| in days, wrapped to the nearest cycle."""
    d = (a - b) / period
    return abs(d - np.round(d)) * period


def test_recovers_known_rrab_curve() -> None:
    rng = np.random.default_rng(1)
    lc = simulate_gaia(rng, period=0.5731, n_epochs=80, a1=0.32, noise=0.01, phi1=1.3)
    truth = truth_of(lc)
    fit = fit_fourier(lc["t"], lc["mag"], lc["sigma"], lc["period"])
    assert fit.n_harmonics >= 4
    assert fit.amplitude == pytest.approx(truth["amplitude"], abs=0.03)
    assert phase_diff(fit.epoch_max, truth["epoch"], lc["period"]) < 0.01 * lc["period"]
    assert abs(fit.epoch_max - lc["t"].mean()) <= 0.5 * lc["period"] + 1e-9
    assert fit.phi31 == pytest.approx(truth["phi31"], abs=4 * fit.phi31_error)
    assert fit.phi31 == pytest.approx(truth["phi31"], abs=0.1)
    assert 0 < fit.phi31_error < 0.1
    assert fit.r21 == pytest.approx(truth["r21"], abs=0.05)
    assert fit.mean_mag == pytest.approx(truth["mean_mag"], abs=0.01)
    # the model reproduces the data to the noise level
    resid = lc["mag"] - fit.model(lc["t"])
    assert np.std(resid) < 0.02
    # phases refer to epoch_max: phi31 from them is the same
    assert np.mod(fit.phases[2] - 3 * fit.phases[0], 2 * np.pi) == pytest.approx(fit.phi31)


def test_phi31_error_matches_scatter() -> None:
    rng = np.random.default_rng(7)
    base = simulate_gaia(rng, period=0.62, n_epochs=50, a1=0.3, noise=0.03)
    truth = truth_of(base)
    values, errors = [], []
    for _ in range(150):
        mag = fourier_model(base["t"], base["period"], base["epoch"], base["mean"],
                            base["amplitudes"], base["phases"])
        mag = mag + rng.normal(0, base["sigma"])
        fit = fit_fourier(base["t"], mag, base["sigma"], base["period"], n_harmonics=6)
        values.append(fit.phi31)
        errors.append(fit.phi31_error)
    scatter = np.std(np.angle(np.exp(1j * (np.array(values) - truth["phi31"]))))
    assert np.median(errors) == pytest.approx(scatter, rel=0.3)


def test_epoch_is_maximum_light_for_sinusoid() -> None:
    t = np.linspace(1000.0, 1900.0, 60)
    period, t_max = 0.4, 1400.13
    mag = 15.0 - 0.2 * np.cos(2 * np.pi * (t - t_max) / period)  # brightest (min mag) at t_max
    fit = fit_fourier(t, mag, np.full(60, 0.01), period, n_harmonics=1)
    assert phase_diff(fit.epoch_max, t_max, period) < 1e-4
    assert fit.amplitude == pytest.approx(0.4, rel=1e-3)
    assert np.isnan(fit.phi31) and np.isnan(fit.phi31_error) and np.isnan(fit.r21)


def test_harmonic_choice_respects_floor_and_bic() -> None:
    rng = np.random.default_rng(4)
    lc = simulate_gaia(rng, period=0.55, n_epochs=150, a1=0.35, noise=0.005)
    assert choose_harmonics(lc["t"], lc["mag"], lc["sigma"], 0.55, max_harmonics=8) >= 5
    # 16 points at 3 per parameter allow 5 parameters, but the 3 harmonics φ31 needs are kept
    # while 3 residual degrees of freedom remain (16 - 7); 9 points leave 2 harmonics
    assert choose_harmonics(lc["t"][:16], lc["mag"][:16], lc["sigma"][:16], 0.55) == 3
    assert choose_harmonics(lc["t"][:9], lc["mag"][:9], lc["sigma"][:9], 0.55) == 2
    sine = 16 + 0.2 * np.cos(2 * np.pi * lc["t"] / 0.55) + rng.normal(0, 0.01, 150)
    assert choose_harmonics(lc["t"], sine, np.full(150, 0.01), 0.55, min_harmonics=1) <= 2


def test_bad_input_raises() -> None:
    t = np.linspace(0, 100, 20)
    with pytest.raises(ValueError, match="period"):
        fit_fourier(t, np.zeros(20), np.ones(20), -1.0)
    with pytest.raises(ValueError, match="finite"):
        fit_fourier(t, np.r_[np.nan, np.zeros(19)], np.ones(20), 0.5)
    with pytest.raises(ValueError, match="too few"):
        fit_fourier(t[:5], np.zeros(5), np.ones(5), 0.5)


def test_clipped_fit_drops_outlier_keeps_the_rest() -> None:
    rng = np.random.default_rng(12)
    lc = simulate_gaia(rng, period=0.58, n_epochs=60, a1=0.3, noise=0.005)
    truth = truth_of(lc)
    mag = lc["mag"].copy()
    mag[17] += 0.9
    plain = fit_fourier(lc["t"], mag, lc["sigma"], lc["period"])
    fit, keep = fit_fourier_clipped(lc["t"], mag, lc["sigma"], lc["period"])
    assert keep.sum() == 59 and not keep[17]
    assert abs(fit.phi31 - truth["phi31"]) < abs(plain.phi31 - truth["phi31"])
    assert fit.amplitude == pytest.approx(truth["amplitude"], abs=0.03)
    # clean data: nothing is dropped
    _, keep_clean = fit_fourier_clipped(lc["t"], lc["mag"], lc["sigma"], lc["period"])
    assert keep_clean.all()
