"""Fourier fit at a known period recovers amplitude, epoch of maximum, phi31 (with an honest
error), R21 and the intensity-averaged mean of a known curve; the batched fit of many stars
gives the per-star fit's numbers."""

from __future__ import annotations

import numpy as np
import pytest
from test_period import fourier_model, simulate_gaia

from rrlfeh.lightcurve.features import features_of_stars, features_one_by_one
from rrlfeh.lightcurve.fourier import (
    choose_harmonics,
    fit_fourier,
    fit_fourier_batch,
    fit_fourier_clipped,
)


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


def varied_stars(seed: int = 5) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]:
    """Three dozen (t, mag, sigma, period): 12 to 200 points, RRab and RRc shapes, outliers
    injected, and the edge cases: too few points, a NaN, a bad period, a noise-free sinusoid
    (BIC ties of rounding noise), a flat curve, every point twice."""
    rng = np.random.default_rng(seed)
    stars = []
    for i, n in enumerate([12, 13, 14, 15, 16, 18, 20, 22, 25, 28, 30, 33, 36, 40, 45, 50, 55,
                           60, 70, 80, 90, 100, 120, 150, 200, 31, 47, 64]):
        lc = simulate_gaia(rng, period=rng.uniform(0.25, 0.85), n_epochs=n, rrc=i % 3 == 0,
                           a1=rng.uniform(0.1, 0.4), noise=rng.uniform(0.005, 0.04))
        mag = lc["mag"].copy()
        for j in rng.choice(n, size=i % 4, replace=False):   # 0-3 outliers
            mag[j] += rng.choice([-1, 1]) * rng.uniform(0.4, 1.5)
        stars.append((lc["t"], mag, lc["sigma"], lc["period"]))
    t, mag, sigma, period = stars[17]
    stars += [(t[:5], mag[:5], sigma[:5], period),                          # too few: fails
              (t, np.r_[np.nan, mag[1:]], sigma, period),                    # NaN: fails
              (t, mag, sigma, -0.5),                                         # bad period: fails
              (t, 16 + 0.3 * np.cos(2 * np.pi * t / period), sigma, period),  # noise-free
              (t, np.full(t.size, 16.0), sigma, period),                     # flat
              (np.r_[t, t], np.r_[mag, mag], np.r_[sigma, sigma], period),   # doubled
              (t[:0], mag[:0], sigma[:0], period)]                           # no points
    return stars


def ragged(stars: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat t, mag, sigma, offsets and periods of a list of stars."""
    offsets = np.r_[0, np.cumsum([len(s[0]) for s in stars])]
    t, mag, sigma = (np.concatenate([s[j] for s in stars]) for j in range(3))
    return t, mag, sigma, offsets, np.array([s[3] for s in stars])


def assert_close(got: object, want: object, what: str) -> None:
    """Equal to 1e-9 (relative, or absolute near 0), NaN where NaN."""
    np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=1e-9,
                               atol=1e-11, err_msg=what)


@pytest.mark.parametrize("knobs", [{}, {"min_harmonics": 1, "max_harmonics": 8,
                                        "clip_sigma": 3.0, "max_clipped_fraction": 0.2}])
def test_batch_equals_per_star_fit(knobs: dict) -> None:
    stars = varied_stars()
    batch = fit_fourier_batch(*ragged(stars), **knobs)
    offsets = ragged(stars)[3]
    assert batch.fallback[-4] and batch.n_clipped.sum() > 10      # both paths exercised
    for i, (t, mag, sigma, period) in enumerate(stars):
        try:
            fit, keep = fit_fourier_clipped(t, mag, sigma, period, **knobs)
        except ValueError:
            assert not batch.ok[i], f"star {i} should fail"
            assert np.isnan(batch.phi31[i]) and batch.n_harmonics[i] == 0
            continue
        assert batch.ok[i], f"star {i} should be fitted"
        k, p = fit.n_harmonics, 2 * fit.n_harmonics + 1
        assert batch.n_harmonics[i] == k, f"star {i}: harmonics"
        assert batch.n_points[i] == fit.n_points and batch.n_clipped[i] == (~keep).sum()
        np.testing.assert_array_equal(batch.keep[offsets[i]:offsets[i + 1]], keep)
        for name in ("phi31", "phi31_error", "r21", "amplitude", "chi2", "reference_time",
                     "epoch_max", "mean_mag"):
            assert_close(getattr(batch, name)[i], getattr(fit, name), f"star {i}: {name}")
        assert_close(batch.coefficients[i, :p], fit.coefficients, f"star {i}: coefficients")
        assert_close(batch.covariance[i, :p, :p], fit.covariance, f"star {i}: covariance")
        assert_close(batch.amplitudes[i, :k], fit.amplitudes, f"star {i}: amplitudes")
        assert np.isnan(batch.coefficients[i, p:]).all()


def test_batch_without_shape_keeps_the_fit_and_drops_only_the_grid() -> None:
    """shape=False (preprocess: the smooth curve gives the amplitude) leaves the fits, φ31, R21
    and their errors bit for bit as with it; the model curve's amplitude, epoch of maximum and
    mean magnitude NaN (fallback stars, fitted one by one, keep theirs)."""
    stars = varied_stars()
    full = fit_fourier_batch(*ragged(stars))
    bare = fit_fourier_batch(*ragged(stars), shape=False)
    for name in ("ok", "n_harmonics", "coefficients", "covariance", "amplitudes", "phi31",
                 "phi31_error", "r21", "chi2", "n_points", "n_clipped", "keep", "reference_time"):
        np.testing.assert_array_equal(getattr(bare, name), getattr(full, name), err_msg=name)
    vectorised = full.ok & ~full.fallback
    assert vectorised.sum() > 20
    for name in ("amplitude", "epoch_max", "mean_mag"):
        assert np.isnan(getattr(bare, name)[vectorised]).all(), name
        assert np.isfinite(getattr(full, name)[vectorised]).all(), name


def test_batched_features_equal_star_features() -> None:
    t, mag, sigma, offsets, period = ragged(varied_stars(seed=8))
    sigma[::7] = np.nan                        # unusable errors: DEFAULT_MAG_ERROR, both ways
    got = features_of_stars(t, mag, sigma, offsets, period)
    want = features_one_by_one(t, mag, sigma, offsets, period)
    assert list(got.columns) == list(want.columns)
    for name in got.columns:
        assert_close(got[name], want[name], name)
    assert got["phi31"].isna().sum() >= 4      # the failed fits


def test_batch_fixed_harmonics_matches_numpy_lstsq() -> None:
    rng = np.random.default_rng(21)
    lc = simulate_gaia(rng, period=0.57, n_epochs=70, a1=0.3, noise=0.02)
    t, mag, sigma, period = lc["t"], lc["mag"], lc["sigma"], lc["period"]
    batch = fit_fourier_batch(t, mag, sigma, np.array([0, t.size]), period, min_harmonics=4,
                              max_harmonics=4, max_clipped_fraction=0.0)
    # the same model written out independently
    x = 2 * np.pi * (t - t.mean()) / period
    design = np.column_stack([np.ones_like(x)] + [f(k * x) for k in range(1, 5)
                                                  for f in (np.cos, np.sin)])
    w = 1 / sigma**2
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], mag * sw, rcond=None)
    chi2 = np.sum(w * (mag - design @ coef) ** 2)
    cov = np.linalg.inv(design.T @ (design * w[:, None])) * max(1.0, chi2 / (70 - 9))
    amps = np.hypot(coef[1::2], coef[2::2])
    phi = np.arctan2(-coef[2::2], coef[1::2])
    grid = np.arange(2000) / 2000 * 2 * np.pi
    curve = coef[0] + sum(coef[2 * k - 1] * np.cos(k * grid) + coef[2 * k] * np.sin(k * grid)
                          for k in range(1, 5))
    assert batch.n_harmonics[0] == 4 and batch.n_clipped[0] == 0
    assert_close(batch.coefficients[0, :9], coef, "coefficients")
    assert_close(batch.covariance[0, :9, :9], cov, "covariance")
    assert_close(batch.chi2[0], chi2, "chi2")
    assert_close(batch.r21[0], amps[1] / amps[0], "r21")
    assert_close(batch.phi31[0], np.mod(phi[2] - 3 * phi[0], 2 * np.pi), "phi31")
    assert_close(batch.amplitude[0], curve.max() - curve.min(), "amplitude")
