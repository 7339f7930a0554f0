"""Fourier-series fit of a light curve at a known period: mean, amplitude, epoch of maximum,
phi31 (with its propagated error) and R21.

Model (the schema's cosine convention): m(t) = A0 + sum_k A_k cos(k w (t - E) + phi_k),
w = 2 pi / P, phi31 = (phi_3 - 3 phi_1) mod 2 pi. phi31 and R21 do not depend on E.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rrlfeh.lightcurve.period import light_curve_arrays, max_harmonics_for

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class FourierFit:
    """A weighted least-squares Fourier fit and the light-curve parameters derived from it."""

    period: float             # d
    n_harmonics: int
    reference_time: float     # the t0 the coefficients refer to (phases below refer to epoch_max)
    coefficients: np.ndarray  # [a0, a1, b1, a2, b2, ...]: a0 + sum a_k cos(k w (t-t0)) + b_k sin
    covariance: np.ndarray    # of `coefficients`, scaled by max(1, reduced chi2)
    amplitudes: np.ndarray    # A_1..A_K, mag
    phases: np.ndarray        # phi_1..phi_K (rad, in [0, 2 pi)) relative to epoch_max
    mean_mag: float           # intensity-averaged magnitude of the model
    amplitude: float          # peak-to-peak of the model, mag
    epoch_max: float          # time of maximum light (model minimum magnitude) nearest mean time
    phi31: float              # rad in [0, 2 pi), NaN when K < 3
    phi31_error: float        # rad, NaN when K < 3
    r21: float                # A2/A1, NaN when K < 2
    chi2: float
    n_points: int

    def model(self, t: np.ndarray) -> np.ndarray:
        """Model magnitudes at times `t` (d)."""
        return _design(np.asarray(t, float) - self.reference_time, self.period,
                       self.n_harmonics) @ self.coefficients


def _design(dt: np.ndarray, period: float, n_harmonics: int) -> np.ndarray:
    """Design matrix [1, cos(k w dt), sin(k w dt)] for k = 1..n_harmonics."""
    x = (TWO_PI / period) * dt
    cols = [np.ones_like(dt)]
    for k in range(1, n_harmonics + 1):
        cols += [np.cos(k * x), np.sin(k * x)]
    return np.column_stack(cols)


def _solve(dt: np.ndarray, mag: np.ndarray, w: np.ndarray, period: float, n_harmonics: int
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted least squares: coefficients, unscaled covariance, chi2."""
    x = _design(dt, period, n_harmonics)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], mag * sw, rcond=None)
    chi2 = float(np.sum(w * (mag - x @ coef) ** 2))
    cov = np.linalg.pinv((x * w[:, None]).T @ x)
    return coef, cov, chi2


def choose_harmonics(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, period: float, *,
                     max_harmonics: int = 6, min_harmonics: int = 3,
                     min_points_per_param: float = 3.0) -> int:
    """Number of harmonics minimising BIC = N ln(chi2/N) + p ln N (the scale-free form, since
    Gaia's per-transit errors carry no calibration floor), between min and max harmonics, capped
    by the points-per-parameter floor above `min_harmonics`; `min_harmonics` are allowed while
    the fit keeps 3 residual degrees of freedom (φ31 needs the third harmonic: on the real DR3
    curves with < 30 epochs a 3-harmonic fit's φ31 predicts the labels to 0.149 dex against
    0.187 with the cap). 0 when even one harmonic is not allowed."""
    n = len(t)
    cap = max_harmonics_for(n, max_harmonics=max_harmonics,
                            min_points_per_param=min_points_per_param)
    cap = max(cap, min(min_harmonics, max_harmonics, (n - 4) // 2))
    if cap < 1:
        return 0
    lo = min(max(1, min_harmonics), cap)
    dt = np.asarray(t, float) - float(np.mean(t))
    w = 1.0 / np.asarray(sigma, float) ** 2
    best, best_bic = lo, np.inf
    for k in range(lo, cap + 1):
        _, _, chi2 = _solve(dt, np.asarray(mag, float), w, period, k)
        bic = n * np.log(max(chi2, 1e-300) / n) + (2 * k + 1) * np.log(n)
        if bic < best_bic:
            best, best_bic = k, bic
    return best


def fit_fourier(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, period: float, *,
                n_harmonics: int | None = None, max_harmonics: int = 6, min_harmonics: int = 3,
                min_points_per_param: float = 3.0, phase_grid: int = 2000) -> FourierFit:
    """Fit a Fourier series at `period` (d) and derive the light-curve parameters.

    `n_harmonics` None chooses it by BIC (see `choose_harmonics`). The epoch of maximum is the
    model's minimum magnitude (found on `phase_grid` phases, then refined by a parabola), moved to
    the cycle nearest the mean observation time, where a period error shifts it least.
    """
    t, mag, sigma = light_curve_arrays(t, mag, sigma)
    n = len(t)
    if not (np.isfinite(period) and period > 0):
        raise ValueError(f"period must be finite and > 0, got {period}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(mag))
            and np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        raise ValueError("t, mag must be finite and sigma finite and > 0")
    if n_harmonics is None:
        n_harmonics = choose_harmonics(t, mag, sigma, period, max_harmonics=max_harmonics,
                                       min_harmonics=min_harmonics,
                                       min_points_per_param=min_points_per_param)
    if n_harmonics < 1 or n < 2 * n_harmonics + 2:
        raise ValueError(f"{n} points are too few for a {max(n_harmonics, 1)}-harmonic fit")

    t0 = float(np.mean(t))
    w = 1.0 / sigma**2
    coef, cov, chi2 = _solve(t - t0, mag, w, period, n_harmonics)
    dof = n - (2 * n_harmonics + 1)
    cov = cov * max(1.0, chi2 / dof)

    # model over one cycle: minimum magnitude = maximum light
    phase = np.arange(phase_grid) / phase_grid
    curve = _design(phase * period, period, n_harmonics) @ coef
    i = int(np.argmin(curve))
    ym, y0, yp = curve[i - 1], curve[i], curve[(i + 1) % phase_grid]
    denom = ym - 2 * y0 + yp
    shift = 0.5 * (ym - yp) / denom if denom > 0 else 0.0
    epoch = t0 + (i + shift) / phase_grid * period
    epoch += np.round((t0 - epoch) / period) * period

    a, b = coef[1::2], coef[2::2]
    amps = np.hypot(a, b)
    # a cos(kx) + b sin(kx) = A cos(kx + phi), phi = atan2(-b, a); x measured from t0
    phi_t0 = np.arctan2(-b, a)
    k = np.arange(1, n_harmonics + 1)
    phases = np.mod(phi_t0 + k * (TWO_PI / period) * (epoch - t0), TWO_PI)

    phi31 = phi31_err = r21 = np.nan
    if n_harmonics >= 2:
        r21 = float(amps[1] / amps[0])
    if n_harmonics >= 3:
        phi31 = float(np.mod(phi_t0[2] - 3 * phi_t0[0], TWO_PI))
        # gradient of phi31 wrt (a1, b1, a3, b3): dphi/da = b/A^2, dphi/db = -a/A^2
        idx = [1, 2, 5, 6]
        grad = np.array([-3 * b[0] / amps[0] ** 2, 3 * a[0] / amps[0] ** 2,
                         b[2] / amps[2] ** 2, -a[2] / amps[2] ** 2])
        phi31_err = float(np.sqrt(grad @ cov[np.ix_(idx, idx)] @ grad))

    return FourierFit(
        period=float(period), n_harmonics=int(n_harmonics), reference_time=t0,
        coefficients=coef, covariance=cov, amplitudes=amps, phases=phases,
        mean_mag=float(-2.5 * np.log10(np.mean(10 ** (-0.4 * curve)))),
        amplitude=float(curve.max() - curve.min()), epoch_max=float(epoch),
        phi31=phi31, phi31_error=phi31_err, r21=r21, chi2=chi2, n_points=n,
    )


def fit_fourier_clipped(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, period: float, *,
                        clip_sigma: float = 5.0, outlier_min_fraction: float = 0.5,
                        max_clipped_fraction: float = 0.1, **fit_kw: object
                        ) -> tuple[FourierFit, np.ndarray]:
    """`fit_fourier` that drops outliers one at a time (worst first, refitting in between): a
    point is an outlier when its residual is beyond `clip_sigma` robust sigmas (1.4826 MAD) and
    beyond `outlier_min_fraction` of the 5-95 % range of the magnitudes (the model's
    amplitude would grow with the outlier it bends to). At most
    `max_clipped_fraction` of the points go. Returns the fit and the mask of points kept."""
    t = np.asarray(t, float)
    mag = np.asarray(mag, float)
    sigma = np.asarray(sigma, float)
    keep = np.ones(len(t), dtype=bool)
    fit = fit_fourier(t, mag, sigma, period, **fit_kw)  # type: ignore[arg-type]
    for _ in range(int(max_clipped_fraction * len(t))):
        resid = mag - fit.model(t)
        dev = np.abs(resid - np.median(resid[keep]))
        scale = 1.4826 * np.median(dev[keep])
        worst = int(np.argmax(np.where(keep, dev, -np.inf)))
        spread = float(np.subtract(*np.percentile(mag[keep], [95, 5])))
        if dev[worst] <= max(clip_sigma * scale, outlier_min_fraction * spread):
            break
        keep[worst] = False
        fit = fit_fourier(t[keep], mag[keep], sigma[keep], period, **fit_kw)  # type: ignore[arg-type]
    return fit, keep
