"""Multi-harmonic period search for sparse, irregular (Gaia-like) light curves.

Coarse-to-fine: a 2-harmonic generalised periodogram of the magnitude ranks on a dense grid (all
frequencies at once; ranks keep the period and blunt outliers), the top peaks refined with a
4-harmonic fit on a fine local grid (the extra harmonics break the aliases of Gaia's scanning
law), the winner chosen by a robust (truncated-quadratic) loss, polished by parabolic steps on
chi2 and checked for being a multiple of a shorter period.

Speed comes from the trigonometric sums: on a uniform grid f = f_b + j*df, exp(2 pi i k f t)
factorises into a block part and an offset part, so every sum over the points for every grid
frequency is one small complex matrix product (BLAS) instead of n_freq * n_points sin/cos calls.
The least-squares chi2 at every frequency then comes from a Cholesky solve vectorised across
frequencies (the normal matrix is built from the same sums). That coarse pass is most of the
cost, so it first runs on every `coarse_stride`-th grid frequency and only the neighbourhoods of
the highest peaks found there are computed on the full grid (the same peaks for ~1/stride of
the work; that strided pass needs only one harmonic, `seed_harmonics`). The refine's local
grids factorise the same way (centre x offset), and the robust fits, the polish and the alias
test solve their small normal equations in batches.

Several bands (`search_period_bands`: G, BP, RP): each mapped onto G (own mean, amplitude
ratio), the points of a transit averaged, the same search run on the averaged curve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.special import betainc

TWO_PI = 2.0 * np.pi
# the coarse grid's size bound: 1e6 trial frequencies is a baseline of ~50,000 d at 0.2-1 d
MAX_TRIAL_FREQUENCIES = 1_000_000
# strided coarse pass: peaks of the strided power climbed on the full grid, per candidate kept
# (peaks of nearly noiseless curves are ~2 grid steps wide: a stride of 2 can halve their power)
SEEDS_PER_CANDIDATE = 4
# frequencies per block of the normal-equation solve: its ~30 work arrays stay in a core's cache
EXPLAINED_BLOCK = 4096


@dataclass(frozen=True)
class PeriodResult:
    """Best period of one light curve and how sure we are of it."""

    period: float            # d
    power: float             # 1 - chi2/chi2_0 of the refine-harmonic fit at the best period
    false_alarm: float       # approximate global false-alarm probability of that power
    n_harmonics: int         # harmonics used in the refine/polish stage
    candidates: tuple[float, ...]  # periods (d) of the coarse peaks that were refined
    at_edge: bool            # the best period lies within one fine step of the search limits
    inliers: np.ndarray      # bool per point: False for the outliers left out
    bands: tuple[str, ...] = ()  # bands that gave the period, reference first (() = unlabelled)


def _design(tc: np.ndarray, freqs: np.ndarray, n_harmonics: int) -> np.ndarray:
    """Design matrices [1, cos(k 2 pi f t), sin(k 2 pi f t)], shape (F, N, 2K+1); the harmonics
    as powers of one complex exponential (one exp call instead of 2K sin/cos calls)."""
    z = np.exp((1j * TWO_PI) * np.outer(freqs, tc))
    out = np.empty((*z.shape, 2 * n_harmonics + 1))
    out[..., 0] = 1.0
    zk = z
    for k in range(1, n_harmonics + 1):
        if k > 1:
            zk = zk * z
        out[..., 2 * k - 1] = zk.real
        out[..., 2 * k] = zk.imag
    return out


def _median_rows(a: np.ndarray) -> np.ndarray:
    """np.median(a, axis=1) by a partial sort, without np.median's per-call overhead."""
    h = a.shape[1] // 2
    if a.shape[1] % 2:
        return np.partition(a, h, axis=1)[:, h]
    part = np.partition(a, (h - 1, h), axis=1)
    return 0.5 * (part[:, h - 1] + part[:, h])


def _fitted(design: np.ndarray, y: np.ndarray, uw: np.ndarray) -> np.ndarray:
    """Fitted values (F, N) of the weighted least-squares fits of y, one per design matrix
    (F, N, p), with weights uw (F, N); the normal matrix slightly regularised (1e-12 trace)."""
    xw = design.transpose(0, 2, 1) * uw[:, None, :]                  # (F, p, N)
    gram = xw @ design
    gram += np.eye(design.shape[-1]) * (1e-12 * np.trace(gram, axis1=1, axis2=2))[:, None, None]
    coef = np.linalg.solve(gram, (xw @ y)[..., None])
    return (design @ coef)[..., 0]


def _robust_residuals(tc: np.ndarray, y: np.ndarray, w: np.ndarray, freqs: np.ndarray,
                      n_harmonics: int, clip_sigma: float, iterations: int = 2
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised residuals (y - fit) sqrt(w), shape (F, N), of K-harmonic fits at each
    frequency, each refitted `iterations` times without the points beyond `clip_sigma` robust
    sigmas of its own fit, and their robust scales (1.4826 MAD about the median), shape (F,)."""
    design = _design(tc, freqs, n_harmonics)
    n_params = design.shape[-1]
    sw = np.sqrt(w)
    use = np.ones((len(freqs), len(tc)))
    for it in range(iterations + 1):
        z = (y - _fitted(design, y, use * w)) * sw
        dev = np.abs(z - _median_rows(z)[:, None])
        scale = 1.4826 * _median_rows(dev)
        if it == iterations:
            break
        new_use = dev <= clip_sigma * np.maximum(scale, 1e-300)[:, None]
        enough = new_use.sum(axis=1) >= n_params + 1
        use = np.where(enough[:, None], new_use, use).astype(float)
    return z, scale


def _chi2_many(tc: np.ndarray, y: np.ndarray, w: np.ndarray, freqs: np.ndarray,
               n_harmonics: int) -> np.ndarray:
    """chi2 of the weighted K-harmonic least-squares fit at each frequency (0 harmonics: the
    weighted mean alone), by the normal equations: a (2K+1)-square solve per frequency, all
    frequencies at once."""
    design = _design(tc, np.asarray(freqs, float), n_harmonics)
    resid = y - _fitted(design, y, np.broadcast_to(w, design.shape[:2]))
    return (resid * resid) @ w


def _chi2_at(tc: np.ndarray, y: np.ndarray, w: np.ndarray, f: float, n_harmonics: int) -> float:
    """chi2 of the weighted K-harmonic least-squares fit at one frequency."""
    return float(_chi2_many(tc, y, w, np.array([f]), n_harmonics)[0])


def max_harmonics_for(n_points: int, *, max_harmonics: int, min_points_per_param: float) -> int:
    """Most harmonics a fit of `n_points` may use with >= `min_points_per_param` points per
    parameter (2 per harmonic plus the mean); 0 when not even one harmonic fits."""
    n_params = int(n_points // min_points_per_param)
    return int(max(0, min(max_harmonics, (n_params - 1) // 2)))


def _sums_grid(t: np.ndarray, y: np.ndarray, w: np.ndarray, f0: float, df: float, n_freq: int,
               n_harmonics: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sums S_k = sum w z^k (k = 1..2K) and T_k = sum w y z^k (k = 1..K),
    z = exp(2 pi i f t), for f = f0 + j*df, j < n_freq, via the block factorisation."""
    block = int(np.ceil(np.sqrt(n_freq)))
    n_blocks = int(np.ceil(n_freq / block))
    f_blocks = f0 + np.arange(n_blocks) * block * df
    offsets = np.arange(block) * df
    wy = w * y
    head1 = np.exp((1j * TWO_PI) * np.outer(f_blocks, t))           # (n_blocks, N)
    tail1 = np.exp((1j * TWO_PI) * np.outer(t, offsets))            # (N, block)
    head, tail = head1, tail1
    s = np.empty((2 * n_harmonics, n_freq), dtype=np.complex128)
    tt = np.empty((n_harmonics, n_freq), dtype=np.complex128)
    for k in range(1, 2 * n_harmonics + 1):
        if k > 1:  # powers by multiplication: far cheaper than complex exp
            head = head * head1
            tail = tail * tail1
        if k <= n_harmonics:
            both = np.concatenate([head * w, head * wy]) @ tail      # (2 n_blocks, block)
            s[k - 1] = both[:n_blocks].ravel()[:n_freq]
            tt[k - 1] = both[n_blocks:].ravel()[:n_freq]
        else:
            s[k - 1] = ((head * w) @ tail).ravel()[:n_freq]
    return s, tt


def _sums_direct(t: np.ndarray, y: np.ndarray, w: np.ndarray, freqs: np.ndarray,
                 n_harmonics: int) -> tuple[np.ndarray, np.ndarray]:
    """The same sums as `_sums_grid` for an arbitrary (short) array of frequencies; `y` and `w`
    are (N,) or one row per frequency (F, N)."""
    z = np.exp((1j * TWO_PI) * np.outer(freqs, t))                   # (F, N)
    wy = w * y
    s = np.empty((2 * n_harmonics, len(freqs)), dtype=np.complex128)
    tt = np.empty((n_harmonics, len(freqs)), dtype=np.complex128)
    per_freq = np.ndim(w) == 2 or np.ndim(y) == 2
    zk = z
    for k in range(1, 2 * n_harmonics + 1):
        if k > 1:
            zk = zk * z
        s[k - 1] = (zk * w).sum(axis=1) if per_freq else zk @ w
        if k <= n_harmonics:
            tt[k - 1] = (zk * wy).sum(axis=1) if per_freq else zk @ wy
    return s, tt


def _explained_chi2(s: np.ndarray, tt: np.ndarray, w_sum: float | np.ndarray) -> np.ndarray:
    """chi2_0 - chi2 of the K-harmonic least-squares fit (with free mean) at each frequency, from
    the sums (y must be weighted-mean-subtracted), EXPLAINED_BLOCK frequencies at a time."""
    n_freq = s.shape[1]
    if n_freq <= EXPLAINED_BLOCK:
        return _explained_block(s, tt, w_sum)
    w = np.broadcast_to(np.asarray(w_sum, float), (n_freq,))
    return np.concatenate([
        _explained_block(s[:, i:i + EXPLAINED_BLOCK], tt[:, i:i + EXPLAINED_BLOCK],
                         w[i:i + EXPLAINED_BLOCK]) for i in range(0, n_freq, EXPLAINED_BLOCK)])


def _explained_block(s: np.ndarray, tt: np.ndarray, w_sum: float | np.ndarray) -> np.ndarray:
    """`_explained_chi2` of one block: a Cholesky solve vectorised across its frequencies."""
    n_harm = tt.shape[0]
    n_freq = s.shape[1]

    s_re, s_im = np.ascontiguousarray(s.real), np.ascontiguousarray(s.imag)
    zero = np.zeros(n_freq)
    full = np.broadcast_to(np.asarray(w_sum, float), (n_freq,))

    def sk(k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Re, Im) of S_k for any integer k (S_0 = W, S_-k = conj S_k)."""
        if k == 0:
            return full, zero
        return (s_re[k - 1], s_im[k - 1]) if k > 0 else (s_re[-k - 1], -s_im[-k - 1])

    # parameter order: mean, c1, s1, c2, s2, ...
    p = 2 * n_harm + 1
    g: list[list[np.ndarray]] = [[None] * p for _ in range(p)]  # type: ignore[list-item]
    g[0][0] = full
    for j in range(1, n_harm + 1):
        g[2 * j - 1][0], g[2 * j][0] = sk(j)
        for k in range(1, j + 1):
            (p_re, p_im), (m_re, m_im) = sk(j + k), sk(j - k)
            g[2 * j - 1][2 * k - 1] = 0.5 * (m_re + p_re)      # cos_j cos_k
            g[2 * j][2 * k] = 0.5 * (m_re - p_re)              # sin_j sin_k
            g[2 * j][2 * k - 1] = 0.5 * (p_im + m_im)          # sin_j cos_k
            if k < j:
                g[2 * j - 1][2 * k] = 0.5 * (p_im - m_im)      # cos_j sin_k
    b: list[np.ndarray] = [zero]
    for k in range(n_harm):
        b += [np.ascontiguousarray(tt[k].real), np.ascontiguousarray(tt[k].imag)]

    eps = 1e-10 * full
    low: list[list[np.ndarray]] = [[None] * p for _ in range(p)]  # type: ignore[list-item]
    u: list[np.ndarray] = []
    bad = np.zeros(n_freq, dtype=bool)
    explained = np.zeros(n_freq)
    for j in range(p):
        d = g[j][j].copy()
        for k in range(j):
            d -= low[j][k] ** 2
        bad |= d <= eps
        d = np.sqrt(np.maximum(d, eps))
        low[j][j] = d
        for i in range(j + 1, p):
            v = g[i][j].copy()
            for k in range(j):
                v -= low[i][k] * low[j][k]
            low[i][j] = v / d
        r = b[j].copy()
        for k in range(j):
            r -= low[j][k] * u[k]
        u.append(r / d)
        explained += u[j] ** 2
    explained[bad] = 0.0
    return explained


def _prepare(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Centred times, weighted-mean-subtracted magnitudes, weights and chi2_0."""
    w = 1.0 / sigma**2
    t = t - 0.5 * (t.min() + t.max())
    y = mag - np.sum(w * mag) / np.sum(w)
    return t, y, w, float(np.sum(w * y**2))


def multiharmonic_power(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, freqs: np.ndarray,
                        *, n_harmonics: int = 2) -> np.ndarray:
    """Generalised multi-harmonic power 1 - chi2/chi2_0 at each frequency (c/d).

    A uniform grid goes through the fast block factorisation, anything else through direct sums.
    """
    t, y, w, chi0 = _prepare(np.asarray(t, float), np.asarray(mag, float),
                             np.asarray(sigma, float))
    freqs = np.asarray(freqs, float)
    steps = np.diff(freqs)
    if len(freqs) > 64 and np.allclose(steps, steps[0], rtol=1e-9, atol=0):
        s, tt = _sums_grid(t, y, w, float(freqs[0]), float(steps[0]), len(freqs), n_harmonics)
    else:
        s, tt = _sums_direct(t, y, w, freqs, n_harmonics)
    return _explained_chi2(s, tt, float(w.sum())) / chi0


def false_alarm_probability(power: float, n_points: int, n_harmonics: int,
                            n_independent: float) -> float:
    """Approximate global false-alarm probability of a K-harmonic power (F-test of the fit
    against a constant, scale-free so it does not trust the Gaia errors' absolute level),
    Bonferroni-corrected for `n_independent` frequencies."""
    dof = n_points - 2 * n_harmonics - 1
    if dof <= 0:
        return 1.0
    p_single = betainc(0.5 * dof, n_harmonics, min(max(1.0 - power, 0.0), 1.0))
    return float(min(1.0, n_independent * p_single))


def subharmonic_p_value(chi2_sub: float, chi2_full: float, n_points: int, n_harmonics: int,
                        n_sub: int) -> float:
    """F-test p-value that the K-harmonic fit beats its sub-model made of every m-th harmonic
    (n_sub of them), i.e. that the period is not a multiple of a shorter one."""
    q = 2 * (n_harmonics - n_sub)
    dof = n_points - 2 * n_harmonics - 1
    if dof <= 0 or chi2_full <= 0:
        return 0.0
    gain = max(chi2_sub - chi2_full, 0.0)
    # survival function of F(q, dof) at (gain/q)/(chi2_full/dof), as a regularised beta
    return float(betainc(0.5 * dof, 0.5 * q, chi2_full / (chi2_full + gain)))


def light_curve_arrays(t, mag, sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One star's (t, mag, sigma) as float arrays of equal length (ValueError otherwise)."""
    t, mag, sigma = (np.asarray(a, float) for a in (t, mag, sigma))
    if not (len(mag) == len(t) == len(sigma)):
        raise ValueError(f"t, mag, sigma lengths differ: {len(t)}, {len(mag)}, {len(sigma)}")
    return t, mag, sigma


def _sums_local(tc: np.ndarray, y: np.ndarray, w: np.ndarray, centres: np.ndarray,
                offsets: np.ndarray, n_harmonics: int) -> tuple[np.ndarray, np.ndarray]:
    """The sums of `_sums_direct` at centres[c] + offsets[j], flattened (c major), `y` and `w`
    one row per centre (C, N): exp(2 pi i k (f_c + o_j) t) factorises, so each harmonic is one
    (C, N) @ (N, J) product instead of C*J*N complex exponentials."""
    zc = np.exp((1j * TWO_PI) * np.outer(centres, tc))              # (C, N)
    zo = np.exp((1j * TWO_PI) * np.outer(tc, offsets))              # (N, J)
    wy = w * y
    shape = (len(centres) * len(offsets),)
    s = np.empty((2 * n_harmonics, *shape), dtype=np.complex128)
    tt = np.empty((n_harmonics, *shape), dtype=np.complex128)
    a, b = zc, zo
    for k in range(1, 2 * n_harmonics + 1):
        if k > 1:
            a = a * zc
            b = b * zo
        s[k - 1] = ((a * w) @ b).ravel()
        if k <= n_harmonics:
            tt[k - 1] = ((a * wy) @ b).ravel()
    return s, tt


def _top_peaks(power: np.ndarray, index: np.ndarray, n_peaks: int, step: int = 1
               ) -> np.ndarray:
    """Grid indices of the `n_peaks` highest local maxima of `power`, known at the sorted grid
    indices `index` (a point counts when both neighbours `step` away are known), the first and
    last known points always among the peaks: the grid's ends may hold the true maximum."""
    inner = np.zeros(len(index), dtype=bool)
    inner[1:-1] = ((index[:-2] == index[1:-1] - step) & (index[2:] == index[1:-1] + step)
                   & (power[1:-1] >= power[:-2]) & (power[1:-1] > power[2:]))
    peaks = np.concatenate([np.flatnonzero(inner), [0, len(index) - 1]])
    return index[peaks[np.argsort(power[peaks])[::-1][:n_peaks]]]


def _rank_power(tc: np.ndarray, yr: np.ndarray, chi_r: float, f_min: float, df: float,
                index: np.ndarray, n_harmonics: int) -> np.ndarray:
    """K-harmonic power of the centred ranks at grid frequencies f_min + index*df (uniform
    `index` steps through the block factorisation, anything else through direct sums)."""
    w = np.ones(len(tc))
    step = index[1] - index[0] if len(index) > 1 else 1
    if len(index) > 64 and np.all(np.diff(index) == step):
        sums = _sums_grid(tc, yr, w, f_min + index[0] * df, step * df, len(index), n_harmonics)
    else:
        sums = _sums_direct(tc, yr, w, f_min + index * df, n_harmonics)
    return _explained_chi2(*sums, float(len(tc))) / chi_r


def _coarse_candidates(t: np.ndarray, mag: np.ndarray, f_min: float, df: float, n_freq: int,
                       n_harmonics: int, n_candidates: int, stride: int = 1,
                       seed_harmonics: int | None = None) -> np.ndarray:
    """Frequencies of the `n_candidates` highest local maxima (the grid's two ends count) of
    the K-harmonic power of the magnitude ranks on the grid f_min + j*df, j < n_freq.

    `stride` > 1: the power is computed on every stride-th grid frequency only, and the
    SEEDS_PER_CANDIDATE * n_candidates highest peaks found there are climbed to the full
    grid's local maxima (the full grid within +-stride of each): nearly always the same peaks
    for about 1/stride of the cost, the refine that follows being cheap next to the coarse
    pass. `seed_harmonics` (at most n_harmonics; None: n_harmonics): the harmonics of that
    strided pass alone. One term finds the true peak among the seeds as often on Gaia curves
    (benchmarks/period_search.py) for a 3-square solve in place of a 5-square one."""
    # ranks, unweighted: any monotonic transform keeps the period, and ranks bound the pull of
    # the wild points Gaia curves keep after the rejection flags
    n = len(t)
    ranks = (np.argsort(np.argsort(mag)) + 0.5) / n
    tc, yr, _, chi_r = _prepare(t, ranks, np.ones(n))
    stride = max(1, min(int(stride), (n_freq - 1) // 64))
    index = np.arange(0, n_freq, stride)
    if stride == 1:
        power = _rank_power(tc, yr, chi_r, f_min, df, index, n_harmonics)
        return f_min + _top_peaks(power, index, n_candidates) * df
    k_seed = n_harmonics if seed_harmonics is None else max(1, min(seed_harmonics, n_harmonics))
    power = _rank_power(tc, yr, chi_r, f_min, df, index, k_seed)
    seeds = np.r_[_top_peaks(power, index, SEEDS_PER_CANDIDATE * n_candidates, stride),
                  0, n_freq - 1]
    index = np.unique(np.clip(seeds[:, None] + np.arange(-stride, stride + 1), 0, n_freq - 1))
    power = _rank_power(tc, yr, chi_r, f_min, df, index, n_harmonics)
    return f_min + _top_peaks(power, index, n_candidates) * df


def _local_explained(tc: np.ndarray, y: np.ndarray, w: np.ndarray, cand_f: np.ndarray,
                     offsets: np.ndarray, n_harmonics: int, f_min: float, f_max: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies clip(cand_f[c] + offsets[j], f_min, f_max), shape (C, J), and the
    explained chi2 of the K-harmonic fit there, weights `w` one row per candidate (C, N), y
    centred on each row's weighted mean. Rows inside the limits go through `_sums_local`, the
    rare rows that cross them (repeated edge frequencies) through `_sums_direct`."""
    fine = np.clip(cand_f[:, None] + offsets[None, :], f_min, f_max)
    w_sum = w.sum(axis=1)
    yc = y - (w @ y / w_sum)[:, None]
    explained = np.empty(fine.shape)
    inside = (cand_f + offsets[0] >= f_min) & (cand_f + offsets[-1] <= f_max)
    if inside.any():
        s, tt = _sums_local(tc, yc[inside], w[inside], cand_f[inside], offsets, n_harmonics)
        explained[inside] = _explained_chi2(s, tt, np.repeat(w_sum[inside], len(offsets))
                                            ).reshape(-1, len(offsets))
    for c in np.flatnonzero(~inside):
        s, tt = _sums_direct(tc, yc[c], w[c], fine[c], n_harmonics)
        explained[c] = _explained_chi2(s, tt, float(w_sum[c]))
    return fine, explained


def _refine(tc: np.ndarray, y: np.ndarray, w: np.ndarray, cand_f: np.ndarray, n_harmonics: int,
            clip_sigma: float, offsets: np.ndarray, f_min: float, f_max: float) -> np.ndarray:
    """Best fine-grid frequency near each candidate by the K-harmonic chi2 of the magnitudes,
    leaving out the points a robust fit at the candidate calls outliers."""
    z, scales = _robust_residuals(tc, y, w, cand_f, n_harmonics, clip_sigma)
    dev = np.abs(z - _median_rows(z)[:, None])
    wc = np.where(dev <= clip_sigma * np.maximum(scales, 1e-300)[:, None], w, 0.0)  # (C, N)
    fine, explained = _local_explained(tc, y, wc, cand_f, offsets, n_harmonics, f_min, f_max)
    return fine[np.arange(len(cand_f)), np.argmax(explained, axis=1)]


def _pick(tc: np.ndarray, y: np.ndarray, w: np.ndarray, mag: np.ndarray, freqs: np.ndarray,
          n_harmonics: int, clip_sigma: float, outlier_min_fraction: float
          ) -> tuple[float, np.ndarray]:
    """The frequency with the least truncated-quadratic loss (robust to outliers; scale: the
    smallest robust residual scale among the frequencies) and the inlier mask of its fit."""
    z, scales = _robust_residuals(tc, y, w, freqs, n_harmonics, clip_sigma)
    centred = z - _median_rows(z)[:, None]
    scale = max(float(scales.min()), 1e-12)
    loss = np.minimum((centred / scale) ** 2, clip_sigma**2).sum(axis=1)
    pick = int(np.argmin(loss))
    # an outlier must also be far in magnitudes: a few harmonics miss the steep rise of RRab
    # curves by many sigmas, and those points carry the phase information
    spread = float(np.subtract(*np.percentile(mag, [95, 5])))
    inliers = ((np.abs(centred[pick]) <= clip_sigma * max(float(scales[pick]), 1e-12))
               | (np.abs(centred[pick]) / np.sqrt(w) <= outlier_min_fraction * spread))
    return float(freqs[pick]), inliers


def _polish(tc: np.ndarray, y: np.ndarray, w: np.ndarray, f: float, half_width: float,
            n_harmonics: int, f_min: float, f_max: float, xatol: float) -> tuple[float, float]:
    """The chi2 minimum within f +- half_width and its chi2: parabolas through chi2 at three
    points (one batched fit each), spaced half_width, then 10 times closer about the last
    vertex, until they are `xatol` apart; the best point evaluated wins (f when none beats it)."""
    lo, hi = max(f_min, f - half_width), min(f_max, f + half_width)
    best_f, best_chi2 = f, np.inf  # the first three points include f itself
    centre, step = f, max(half_width, xatol)
    while True:
        xs = np.clip(centre + np.array([-step, 0.0, step]), lo, hi)
        chi2 = _chi2_many(tc, y, w, xs, n_harmonics)
        i = int(np.argmin(chi2))
        if chi2[i] < best_chi2:
            best_f, best_chi2 = float(xs[i]), float(chi2[i])
        if step <= xatol:
            break
        centre = float(np.clip(_vertex(xs, chi2), lo, hi))
        step /= 10.0
    return best_f, best_chi2


def _vertex(x: np.ndarray, y: np.ndarray) -> float:
    """Abscissa of the minimum of the parabola through three points (the lowest point where
    they are not distinct or not convex)."""
    d1 = (y[1] - y[0]) / (x[1] - x[0]) if x[1] > x[0] else np.nan
    d2 = (y[2] - y[1]) / (x[2] - x[1]) if x[2] > x[1] else np.nan
    curvature = (d2 - d1) / (x[2] - x[0]) if x[2] > x[0] else np.nan
    if not curvature > 0:
        return float(x[np.argmin(y)])
    return float(0.5 * (x[0] + x[1]) - d1 / (2.0 * curvature))


def search_period(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, *,
                  min_period: float = 0.2, max_period: float = 1.0,
                  oversampling: float = 5.0, coarse_harmonics: int = 2,
                  n_candidates: int = 8, refine_harmonics: int = 4,
                  refine_factor: int = 10, refine_halfwidth: float = 2.0,
                  min_points_per_param: float = 3.0,
                  subharmonic_alpha: float = 1e-3, clip_sigma: float = 5.0,
                  outlier_min_fraction: float = 0.5, coarse_stride: int = 2,
                  seed_harmonics: int = 1) -> PeriodResult:
    """Best period (d) of one light curve in [min_period, max_period].

    `oversampling`: coarse grid step = 1/(oversampling * baseline). The `n_candidates` highest
    coarse peaks of the `coarse_harmonics`-term power of the magnitude ranks are each refined
    on a grid `refine_factor` times finer over +-`refine_halfwidth` coarse steps with a
    `refine_harmonics`-term fit (fewer when the points per parameter would drop below
    `min_points_per_param`). The candidate with the least truncated-quadratic loss wins;
    points beyond `clip_sigma` robust sigmas of its fit and off it by more than
    `outlier_min_fraction` of the 5-95 % magnitude range are outliers, left out of the
    polish of chi2 (`_polish`, to 1 % of a fine step), the tests below and the result's power.
    `coarse_stride` > 1 computes the coarse power on every coarse_stride-th frequency first
    and the full grid only about its highest peaks (`_coarse_candidates`), the first with
    `seed_harmonics` terms.
    If the harmonics that are not multiples of m (m = 2, 3) are not significant at
    `subharmonic_alpha` (F-test), the period is a multiple of the true one and P/m is taken.
    """
    t, mag, sigma = light_curve_arrays(t, mag, sigma)
    n = len(t)
    if not 0 < min_period < max_period:
        raise ValueError(f"need 0 < min_period < max_period, got {min_period}, {max_period}")
    k_ref = max_harmonics_for(n, max_harmonics=refine_harmonics,
                              min_points_per_param=min_points_per_param)
    if k_ref < 1:
        raise ValueError(f"{n} points are too few for a 1-harmonic fit "
                         f"at {min_points_per_param:g} points per parameter")
    baseline = float(t.max() - t.min())
    if baseline <= 0:
        raise ValueError("all observations at the same time")
    f_min, f_max = 1.0 / max_period, 1.0 / min_period
    df = 1.0 / (oversampling * baseline)
    n_freq = int(np.ceil((f_max - f_min) / df)) + 1
    if n_freq > MAX_TRIAL_FREQUENCIES:  # a Gaia baseline (~1,000 d) needs ~20,000
        raise ValueError(f"time baseline {baseline:.3g} d would need {float(n_freq):.2g} "
                         f"trial frequencies (> {MAX_TRIAL_FREQUENCIES:.0e}); times in days?")
    cand_f = _coarse_candidates(t, mag, f_min, df, n_freq, min(coarse_harmonics, k_ref),
                                n_candidates, coarse_stride, seed_harmonics)
    tc, y, w, _ = _prepare(t, mag, sigma)
    fine_df = df / refine_factor
    half = int(round(refine_halfwidth * refine_factor))
    fine_best = _refine(tc, y, w, cand_f, k_ref, clip_sigma, np.arange(-half, half + 1) * fine_df,
                        f_min, f_max)
    f_best, inliers = _pick(tc, y, w, mag, fine_best, k_ref, clip_sigma, outlier_min_fraction)

    n_in = int(inliers.sum())
    k_ref = max_harmonics_for(n_in, max_harmonics=refine_harmonics,
                              min_points_per_param=min_points_per_param)
    if k_ref < 1:
        raise ValueError(f"{n_in} points left after clipping {n - n_in} outliers are too few "
                         f"for a 1-harmonic fit")
    tc, y, w, chi0 = _prepare(t[inliers], mag[inliers], sigma[inliers])
    limits = dict(f_min=f_min, f_max=f_max, xatol=fine_df * 1e-2)
    f_best, chi2_full = _polish(tc, y, w, f_best, fine_df, k_ref, **limits)
    # a multiple of the true period fits as well with the same number of terms (its odd
    # harmonics soak up noise): keep m*f unless the harmonics that are not multiples of m matter
    for m in (2, 3):
        if m * f_best > f_max:
            continue
        k_sub = k_ref // m
        chi2_sub = _chi2_at(tc, y, w, m * f_best, k_sub)
        if subharmonic_p_value(chi2_sub, chi2_full, n_in, k_ref, k_sub) > subharmonic_alpha:
            f_best, chi2_full = _polish(tc, y, w, m * f_best, m * fine_df, k_ref, **limits)
            break
    final_power = (chi0 - chi2_full) / chi0
    n_indep = (f_max - f_min) * baseline * k_ref
    return PeriodResult(
        period=1.0 / f_best,
        power=final_power,
        false_alarm=false_alarm_probability(final_power, n_in, k_ref, n_indep),
        n_harmonics=k_ref,
        candidates=tuple(float(1.0 / f) for f in cand_f),
        at_edge=bool(f_best - f_min < fine_df or f_max - f_best < fine_df),
        inliers=inliers,
    )


def transit_groups(t: np.ndarray, window: float) -> np.ndarray:
    """Transit index of each point (0, 1, ... in time order): points closer in time than
    `window` (d) to the previous one share a transit (Gaia's BP/RP times trail G's by seconds,
    its two fields of view by 106 min)."""
    order = np.argsort(t, kind="stable")
    groups = np.empty(len(t), dtype=np.int64)
    groups[order] = np.cumsum(np.r_[True, np.diff(t[order]) > window]) - 1
    return groups


def _band_map(y_ref: np.ndarray, s_ref: np.ndarray, y_b: np.ndarray, s_b: np.ndarray
              ) -> tuple[float, float, float] | None:
    """(scale, offset, mismatch) with y_b ~ offset + scale * y_ref over transits seen in both
    bands (same phases): scale the Theil-Sen slope (robust to outliers), undiluted by the
    reference's own noise; mismatch the variance, in reference units, of the mapped band about
    the reference beyond both noises (shapes that differ, blends). None without a signal."""
    spread2 = (1.4826 * float(np.median(np.abs(y_ref - np.median(y_ref))))) ** 2
    signal = 1.0 - float(np.median(s_ref**2)) / spread2 if spread2 > 0 else 0.0
    i, j = np.triu_indices(len(y_ref), 1)
    dx = y_ref[j] - y_ref[i]
    if signal <= 0 or not (dx != 0).any():
        return None
    scale = float(np.median((y_b[j] - y_b[i])[dx != 0] / dx[dx != 0])) / max(signal, 0.5)
    if not scale > 0:
        return None
    offset = float(np.median(y_b - scale * y_ref))
    d = (y_b - offset) / scale - y_ref
    spread = 1.4826 * float(np.median(np.abs(d - np.median(d))))
    noise = float(np.median(s_ref**2) + np.median((s_b / scale) ** 2))
    return scale, offset, max(spread**2 - noise, 0.0)


def _band_order(band: np.ndarray, reference: str) -> tuple[list[str], np.ndarray]:
    """Band names, the reference first (else the band with most points), and each point's
    index in that list."""
    labels = np.char.upper(np.char.strip(np.asarray(band, dtype=str)))
    names, inverse = np.unique(labels, return_inverse=True)
    ref = reference.upper() if reference.upper() in names else names[np.argmax(
        np.bincount(inverse))]
    order = [str(ref), *sorted(str(n) for n in names if n != ref)]
    return order, np.array([order.index(n) for n in names], dtype=np.int64)[inverse]


def _per_transit(values: np.ndarray, w: np.ndarray, key: np.ndarray, shape: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of `values` and its variance in each (transit, band) cell (NaN, inf where
    the cell is empty), `key` = transit * n_bands + band."""
    w_cell = np.bincount(key, w, shape[0] * shape[1]).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(key, w * values, shape[0] * shape[1]).reshape(shape) / w_cell
        return mean, 1.0 / w_cell


def _band_maps(y: np.ndarray, v: np.ndarray, min_transits: int) -> np.ndarray:
    """(scale, offset, mismatch) of each band onto band 0, shape (n_bands, 3); scale 0 for a
    band that shares fewer than `min_transits` transits with band 0 or shows no signal."""
    maps = np.zeros((y.shape[1], 3))
    maps[0, 0] = 1.0
    for b in range(1, y.shape[1]):
        both = np.isfinite(y[:, 0]) & np.isfinite(y[:, b])
        fit = None if both.sum() < min_transits else _band_map(
            y[both, 0], np.sqrt(v[both, 0]), y[both, b], np.sqrt(v[both, b]))
        if fit is not None:
            maps[b] = fit
    return maps


def search_period_bands(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, band: np.ndarray,
                        *, reference: str = "G", transit_window: float = 0.01,
                        min_band_transits: int = 8, **search_kw) -> PeriodResult:
    """Best period (d) of one star from its epochs in several bands (`band`: label per point,
    e.g. 'G', 'BP', 'RP'): one period and one Fourier shape, each band its own mean and
    amplitude scale, as Gaia's SOS pipeline fits them.

    Each other band is mapped onto the `reference` band's magnitudes (`_band_map`: offset and
    amplitude ratio from the transits seen in both, and how far its shape departs) when it
    shares >= `min_band_transits` transits with it (`transit_groups`, `transit_window` d). The
    mapped points of each transit are averaged with weights 1/(sigma^2 + mismatch), and the
    averaged curve goes through `search_period` with `search_kw`: one point a transit, so the
    search costs what a G-only one does and its harmonics and false-alarm test count transits
    (the phases), not points. Where the reference band is precise, its points dominate (the other
    bands' shapes differ by more than its noise); where it is noisy, the others add what they
    see, and transits the reference band lacks (about 2 % of Gaia's) count too. A star with no
    band to join is searched on its reference-band points alone (the G-only numbers).
    `inliers` marks the points used and kept; `bands` names the bands used.
    """
    t, mag, sigma = light_curve_arrays(t, mag, sigma)
    if len(band) != len(t):
        raise ValueError(f"band has {len(band)} labels for {len(t)} points")
    order, band_idx = _band_order(band, reference)
    groups = transit_groups(t, transit_window)
    shape = (int(groups.max()) + 1 if len(t) else 0, len(order))
    key = groups * shape[1] + band_idx
    maps = _band_maps(*_per_transit(mag, 1.0 / sigma**2, key, shape), min_band_transits)
    joined = maps[band_idx, 0] > 0
    if joined.sum() == (band_idx == 0).sum():  # no other band joins: the reference alone
        own = band_idx == 0
        found = search_period(t[own], mag[own], sigma[own], **search_kw)
        inliers = np.zeros(len(t), dtype=bool)
        inliers[own] = found.inliers
        return replace(found, inliers=inliers, bands=(order[0],))
    scale, offset, mismatch = (maps[band_idx[joined], j] for j in range(3))
    w = 1.0 / ((sigma[joined] / scale) ** 2 + mismatch)  # weights of the mapped magnitudes
    y = (mag[joined] - offset) / scale
    _, compact = np.unique(groups[joined], return_inverse=True)
    w_t = np.bincount(compact, w)
    found = search_period(np.bincount(compact, w * t[joined]) / w_t,
                          np.bincount(compact, w * y) / w_t, 1.0 / np.sqrt(w_t), **search_kw)
    inliers = np.zeros(len(t), dtype=bool)
    inliers[joined] = found.inliers[compact]
    return replace(found, inliers=inliers,
                   bands=tuple(order[b] for b in range(len(order)) if maps[b, 0] > 0))
