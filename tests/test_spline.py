"""Periodic P-spline fits: wrap-around, recovery, smoothing choice, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest

from rrlfeh.preprocess.spline import (
    difference_penalty,
    evaluate_at_epochs,
    evaluate_splines,
    fit_periodic_splines,
    periodic_basis,
    periodic_basis_matrix,
)


def sawtooth(phase: np.ndarray, amplitude: float = 0.8, n_harmonics: int = 4) -> np.ndarray:
    """RRab-like magnitude: slow decline in brightness, steep rise to maximum at phase 0/1."""
    k = np.arange(1, n_harmonics + 1)[:, None]
    return 16.0 - amplitude / np.pi * np.sum(np.sin(2 * np.pi * k * phase) / k, axis=0)


def one_star(n: int, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.sort(rng.random(n))
    return x, sawtooth(x) + rng.normal(0.0, sigma, n)


def test_basis_is_partition_of_unity_and_periodic():
    x = np.linspace(0, 1, 101, endpoint=False)
    b = periodic_basis_matrix(x, 20)
    np.testing.assert_allclose(b.sum(axis=1), 1.0)
    index, value = periodic_basis(np.array([0.0, 1.0 - 1e-12]), 20)
    np.testing.assert_allclose(np.bincount(index[0], value[0], 20),
                               np.bincount(index[1], value[1], 20), atol=1e-9)


def test_penalty_null_space_is_constants():
    p = difference_penalty(24, 2)
    np.testing.assert_allclose(p @ np.ones(24), 0.0, atol=1e-12)
    assert np.sum(np.linalg.eigvalsh(p) < 1e-9) == 1


def test_no_edge_artefact_on_sawtooth():
    x, y = one_star(150, 0.01)
    fit = fit_periodic_splines(x, y, np.array([0, x.size]))
    assert fit.ok.all()
    eps = 1e-7
    v = evaluate_splines(fit, np.array([1 - 2 * eps, 1 - eps, 0.0, eps]))[0]
    assert abs(v[1] - v[2]) < 1e-5                               # value continuous across 1 -> 0
    slope_left, slope_right = (v[1] - v[0]) / eps, (v[3] - v[2]) / eps
    assert abs(slope_left - slope_right) < 1e-3 * abs(slope_left) + 1e-3
    # the steep rise straddles the wrap: the fit there is as good as elsewhere
    edge = np.r_[np.linspace(0.0, 0.05, 50), np.linspace(0.95, 1.0, 50, endpoint=False)]
    middle = np.linspace(0.3, 0.7, 100)
    err_edge = np.abs(evaluate_splines(fit, edge)[0] - sawtooth(edge))
    err_mid = np.abs(evaluate_splines(fit, middle)[0] - sawtooth(middle))
    assert np.sqrt(np.mean(err_edge ** 2)) < 0.03
    assert np.sqrt(np.mean(err_edge ** 2)) < 4 * np.sqrt(np.mean(err_mid ** 2)) + 0.005


@pytest.mark.parametrize("criterion", ["reml", "gcv"])
def test_recovers_noisy_curve_better_than_noise(criterion):
    sigma = 0.03
    x, y = one_star(80, sigma, seed=3)
    fit = fit_periodic_splines(x, y, np.array([0, x.size]), criterion=criterion)
    grid = np.linspace(0, 1, 264, endpoint=False)
    err = evaluate_splines(fit, grid)[0] - sawtooth(grid)
    assert np.sqrt(np.mean(err ** 2)) < 0.6 * sigma
    resid = y - evaluate_at_epochs(fit, x, np.array([0, x.size]))
    assert 0.7 * sigma < np.sqrt(np.mean(resid ** 2)) < 1.2 * sigma


def test_smoothing_grows_with_noise():
    rng = np.random.default_rng(5)
    x = np.sort(rng.random(60))
    noise = rng.normal(0.0, 1.0, x.size)
    sigmas = [0.002, 0.02, 0.1]
    y = np.concatenate([sawtooth(x) + s * noise for s in sigmas])
    xs = np.tile(x, len(sigmas))
    fit = fit_periodic_splines(xs, y, np.arange(len(sigmas) + 1) * x.size)
    assert np.all(np.diff(fit.log10_lam) > 0.3)
    assert np.all(np.diff(fit.edf) < 0)


def test_star_alone_equals_star_in_batch():
    rng = np.random.default_rng(11)
    sizes = rng.integers(15, 90, 300)
    offsets = np.r_[0, np.cumsum(sizes)]
    x = rng.random(offsets[-1])
    y = sawtooth(x) + rng.normal(0, 0.02, x.size) + np.repeat(rng.normal(0, 1, sizes.size), sizes)
    w = rng.uniform(0.5, 2.0, x.size)
    batch = fit_periodic_splines(x, y, offsets, weights=w, chunk_size=64)
    i = 217                                   # in the fourth chunk
    sl = slice(offsets[i], offsets[i + 1])
    alone = fit_periodic_splines(x[sl], y[sl], np.array([0, sizes[i]]), weights=w[sl])
    np.testing.assert_allclose(batch.coef[i], alone.coef[0], rtol=1e-8, atol=1e-10)
    for name in ("offset", "log10_lam", "edf", "gcv"):
        np.testing.assert_allclose(getattr(batch, name)[i], getattr(alone, name)[0], rtol=1e-8)


def test_matches_direct_penalised_solve():
    x, y = one_star(40, 0.02, seed=9)
    w = np.linspace(0.5, 1.5, x.size)
    fit = fit_periodic_splines(x, y, np.array([0, x.size]), weights=w, n_basis=24)
    b = periodic_basis_matrix(x, 24)
    p = difference_penalty(24, 2)
    wn = w * x.size / w.sum()
    g = b.T @ (wn[:, None] * b)
    lam = 10.0 ** fit.log10_lam[0] * np.trace(g) / np.trace(p)
    coef = np.linalg.solve(g + lam * p, b.T @ (wn * (y - fit.offset[0])))
    np.testing.assert_allclose(fit.coef[0], coef, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(fit.edf[0], np.trace(np.linalg.solve(g + lam * p, g)), rtol=1e-8)


def test_unfittable_star_flagged_not_fatal():
    x, y = one_star(30, 0.01)
    xs = np.r_[x, 0.2, 0.4]
    ys = np.r_[y, 15.0, 15.1]
    fit = fit_periodic_splines(xs, ys, np.array([0, 30, 32]))
    assert fit.ok.tolist() == [True, False]
    assert np.isnan(fit.coef[1]).all() and np.isfinite(fit.coef[0]).all()


def test_bad_criterion():
    with pytest.raises(ValueError, match="criterion"):
        fit_periodic_splines(np.array([0.1]), np.array([1.0]), np.array([0, 1]), criterion="aic")
