"""Template features (rrlfeh.lightcurve.templates): the FFT fit over all shifts against a plain
loop over shifts, the recovery of φ31 from sparse curves against the Fourier fit's, and a star
never matching its own template when told so."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.data.synthetic_shapes import model_mag, normalise, rrab_shape
from rrlfeh.lightcurve.features import star_features
from rrlfeh.lightcurve.templates import TemplateBank, build_bank, template_features

N_GRID = 264


def population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(amps, phases, phi31) of n synthetic RRab shapes, maximum at phase 0."""
    rng = np.random.default_rng(seed)
    phi31 = rng.uniform(1.7, 2.7, n)
    amplitude = rng.uniform(0.5, 1.1, n)
    r, p = rrab_shape(rng, phi31, amplitude)
    _, amps, phases = normalise(r, p, amplitude, np.full(n, 15.0))
    return amps, phases, phi31


def curves_of(amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    grid = np.arange(N_GRID) / N_GRID
    return np.array([model_mag(grid, 1.0, 0.0, 0.0, a, p)
                     for a, p in zip(amps, phases, strict=True)])


def fourier_phi31(amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    return (phases[:, 2] - 3 * phases[:, 0]) % (2 * np.pi)


def brute_force(bank: TemplateBank, x: np.ndarray, y: np.ndarray, s: np.ndarray) -> float:
    """φ31 of one star by a loop over templates and shifts, np.interp and np.polyfit."""
    g = bank.curves.shape[1]
    knots = np.arange(g + 1) / g
    chi2 = np.full(len(bank), np.inf)
    for j, t in enumerate(bank.curves):
        tt, t2 = np.r_[t, t[0]], np.r_[t ** 2, t[0] ** 2]
        for shift in range(g):
            u = (x + shift / g) % 1.0
            v, v2 = np.interp(u, knots, tt), np.interp(u, knots, t2)
            w = 1 / s ** 2
            sw, sx, sy = w.sum(), (w * v).sum(), (w * y).sum()
            cxx = (w * v2).sum() - sx ** 2 / sw
            cxy = (w * v * y).sum() - sx * sy / sw
            if cxy / cxx > 0.05:
                chi2[j] = min(chi2[j], (w * y * y).sum() - sy ** 2 / sw - cxy ** 2 / cxx)
    tau = max(1.0, chi2.min() / (len(x) - 3))
    wt = np.exp(-(chi2 - chi2.min()) / (2 * tau))
    return float(np.angle((wt / wt.sum()) @ np.exp(1j * bank.phi31)) % (2 * np.pi))


def sparse_draw(rng, amps, phases, n_epochs: int, noise: float):
    """Epochs (phase from maximum, mag, sigma) of one star: n_epochs random phases."""
    x = np.sort(rng.uniform(0, 1, n_epochs))
    y = model_mag(x, 1.0, 0.0, 15.0, amps, phases) + rng.normal(0, noise, n_epochs)
    return x, y, np.full(n_epochs, noise)


def test_fft_fit_equals_a_loop_over_shifts():
    amps, phases, _ = population(12, seed=1)
    bank = build_bank(curves_of(amps, phases), fourier_phi31(amps, phases), amps[:, 1] / amps[:, 0],
                      np.arange(12), grid=64)
    rng = np.random.default_rng(2)
    stars = [sparse_draw(rng, *population(1, seed=10 + i)[:2], 20, 0.03) for i in range(3)]
    x, y, s = (np.concatenate(v) for v in zip(*stars, strict=True))
    phi, r21 = template_features(bank, x, y, s, np.array([0, 20, 40, 60]))
    expected = [brute_force(bank, *star) for star in stars]
    np.testing.assert_allclose(phi, expected, atol=1e-6)
    assert np.all((r21 > 0) & (r21 < 1))


def test_sparse_phi31_closer_than_the_fourier_fit():
    amps, phases, phi31 = population(360, seed=3)
    bank = build_bank(curves_of(amps[:300], phases[:300]), phi31[:300],
                      amps[:300, 1] / amps[:300, 0], np.arange(300))
    rng = np.random.default_rng(4)
    draws = [sparse_draw(rng, amps[i], phases[i], 20, 0.03) for i in range(300, 360)]
    x, y, s = (np.concatenate(v) for v in zip(*draws, strict=True))
    phi, _ = template_features(bank, x, y, s, np.arange(61) * 20)
    fit = np.array([star_features(*d, 1.0)["phi31"] for d in draws])
    err = lambda a: np.abs(np.angle(np.exp(1j * (a - phi31[300:]))))  # noqa: E731
    assert np.nanmedian(err(phi)) < 0.6 * np.nanmedian(err(fit))
    assert np.sqrt(np.mean(err(phi) ** 2)) < np.sqrt(np.nanmean(err(fit) ** 2))


def test_own_template_left_out():
    amps, phases, phi31 = population(40, seed=5)
    ids = np.arange(100, 140)
    bank = build_bank(curves_of(amps, phases), phi31, amps[:, 1] / amps[:, 0], ids)
    x = np.arange(30) / 30
    y = model_mag(x, 1.0, 0.0, 15.0, amps[7], phases[7])  # star 107's own curve, no noise
    s, off = np.full(30, 0.001), np.array([0, 30])
    own, _ = template_features(bank, x, y, s, off)
    other, _ = template_features(bank, x, y, s, off, exclude=np.array([107]))
    assert own[0] == pytest.approx(phi31[7], abs=1e-6)
    assert abs(np.angle(np.exp(1j * (other[0] - phi31[7])))) > 1e-4


def test_bank_round_trip_and_empty(tmp_path):
    amps, phases, phi31 = population(5, seed=6)
    bank = build_bank(curves_of(amps, phases), phi31, amps[:, 1] / amps[:, 0], np.arange(5),
                      max_epochs=33)
    back = TemplateBank.from_npz(bank.save(tmp_path / "bank.npz"))
    np.testing.assert_array_equal(back.curves, bank.curves)
    assert back.max_epochs == 33 and list(back.source_id) == list(range(5))
    np.testing.assert_allclose(np.ptp(bank.curves, axis=1), 1.0)
    empty = build_bank(np.empty((0, 10)), np.empty(0), np.empty(0), np.empty(0, np.int64))
    phi, r21 = template_features(empty, np.zeros(3), np.zeros(3), None, np.array([0, 3]))
    assert np.isnan(phi).all() and np.isnan(r21).all()


def test_served_bank_reaches_the_planes_bins_only():
    """`train.served_bank`: the model folder's bank stops where the last bin plane does (the
    line, served above, does not read the template features), and is left out where no bin
    serves a plane or kept whole where the network reads a template channel."""
    from rrlfeh.stages.train import served_bank

    amps, phases, phi31 = population(4, seed=7)
    bank = build_bank(curves_of(amps, phases), phi31, amps[:, 1] / amps[:, 0], np.arange(4))
    bins = [{"lo": 0.0, "hi": 17.5, "relation": "plane"}, {"lo": 17.5, "hi": 27.5,
            "relation": "plane"}, {"lo": 27.5, "hi": 35.0, "relation": "line"},
            {"lo": 35.0, "hi": 1e6, "relation": "line"}]
    channels = ("standardised_mag", "phase_x_period_d", "period_d", "phi31")
    assert served_bank(bank, {"bins": bins}, channels).max_epochs == 27
    wide = [{**b, "relation": "plane"} for b in bins]
    assert served_bank(bank, {"bins": wide}, channels).max_epochs == bank.max_epochs
    lines = [{**b, "relation": "line"} for b in bins]
    assert served_bank(bank, {"bins": lines}, channels) is None
    assert served_bank(bank, {"bins": lines}, (*channels, "phi31_template")) is bank
    assert served_bank(None, {"bins": bins}, channels) is None
