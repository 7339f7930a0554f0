"""φ31 and R21 of sparse curves from the shapes of dense ones: template matching.

A Fourier fit of 15-30 epochs gives a noisy φ31 (real DR3 RRab at 25 epochs: median error 0.17
rad, against 0.07 here), because it has 7+ free parameters. RR Lyrae shapes are far fewer than
that: every dense training curve of the type is a template (mean-subtracted, unit peak-to-peak
magnitude on a phase grid, with its own φ31 and R21). A star's epochs are fitted by each template
at every phase shift with a free mean and amplitude (weighted least squares, all shifts at once
through the FFT: the cross-correlations of the epochs' interpolation weights with the template),
and φ31, R21 are the templates' values averaged with weights exp(−Δχ²/2τ), τ the best fit's
reduced χ² (at least 1): a posterior mean under the population of dense shapes. No label is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rrlfeh.io import atomic_path
from rrlfeh.lightcurve.features import clean_sigma

MIN_AMPLITUDE = 0.05  # mag: a template fitted with a smaller (or negative) amplitude does not count
FILE = "templates.npz"  # a bank's file in a model's ensemble folder
PREFIX = "template_"  # the bank's arrays in an npz file
FIELDS = ("curves", "phi31", "r21", "source_id", "max_epochs")
MAX_CELLS = 250_000  # stars x templates x grid points at once: arrays of 2 MB stay in cache
# (4,000,000: half the stars/s of the whole preprocessing, outputs within 2.2e-16;
# benchmarks/chunk_sizes.py)


@dataclass(frozen=True)
class TemplateBank:
    """Dense curves of one type: `curves` (J, G) magnitude, mean 0, peak-to-peak 1, phase k/G
    from maximum light; their φ31 (rad, cosine convention), R21 and source_id; stars with more
    than `max_epochs` epochs keep their own fit's values (their Fourier fit is good)."""

    curves: np.ndarray
    phi31: np.ndarray
    r21: np.ndarray
    source_id: np.ndarray
    max_epochs: int = 45

    def __len__(self) -> int:
        return int(self.source_id.size)

    def arrays(self) -> dict[str, np.ndarray]:
        """The bank as named arrays (PREFIX + field), e.g. beside a type's training arrays."""
        return {f"{PREFIX}{k}": np.asarray(getattr(self, k)) for k in FIELDS}

    @classmethod
    def from_npz(cls, path: Path) -> TemplateBank | None:
        """The bank among an npz file's arrays (`arrays`), None where it holds none."""
        with np.load(path) as d:
            if f"{PREFIX}curves" not in d.files:
                return None
            v = {k: d[f"{PREFIX}{k}"] for k in FIELDS}
        return cls(v["curves"].astype(float), v["phi31"].astype(float), v["r21"].astype(float),
                   v["source_id"].astype(np.int64), int(v["max_epochs"]))

    def save(self, path: Path) -> Path:
        """One npz file of `arrays`, written atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **self.arrays())
        return path


def build_bank(curves: np.ndarray, phi31: np.ndarray, r21: np.ndarray, source_id: np.ndarray,
               *, grid: int = 128, max_templates: int = 800, max_epochs: int = 45,
               seed: int = 42) -> TemplateBank:
    """A bank from smooth curves (N, n_points) uniform in phase from maximum (magnitudes or any
    positive multiple), resampled to `grid` points; rows with non-finite values or no amplitude
    are left out, at most `max_templates` kept (a seeded draw)."""
    c = np.asarray(curves, float)
    ok = np.isfinite(c).all(axis=1) & np.isfinite(phi31) & np.isfinite(r21)
    ptp = np.ptp(c, axis=1) if len(c) else np.empty(0)
    ok &= ptp > 0
    rows = np.flatnonzero(ok)
    if rows.size > max_templates:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_templates, replace=False))
    n = c.shape[1] if c.ndim == 2 else grid
    x = np.arange(grid) / grid * n
    lo = np.floor(x).astype(int)
    f = x - lo
    t = c[rows][:, lo % n] * (1 - f) + c[rows][:, (lo + 1) % n] * f
    t = (t - t.mean(axis=1, keepdims=True)) / np.ptp(t, axis=1, keepdims=True)
    return TemplateBank(t, np.asarray(phi31, float)[rows], np.asarray(r21, float)[rows],
                        np.asarray(source_id, np.int64)[rows], int(max_epochs))


def template_features(bank: TemplateBank, phase: np.ndarray, mag: np.ndarray,
                      sigma: np.ndarray | None, offsets: np.ndarray,
                      exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(φ31, R21) of each star (epochs phase[offsets[i]:offsets[i+1]], phase from maximum in
    cycles) from the bank, each star's own template (`exclude`: one source_id a star, or None)
    left out; NaN where no template fits or the bank is empty."""
    n_stars = len(offsets) - 1
    phi = np.full(n_stars, np.nan)
    r21 = np.full(n_stars, np.nan)
    if n_stars == 0 or len(bank) == 0:
        return phi, r21
    j, g = bank.curves.shape
    spec1 = np.fft.rfft(bank.curves, axis=1)
    spec2 = np.fft.rfft(bank.curves ** 2, axis=1)
    w = np.ones(len(mag)) if sigma is None else 1.0 / np.asarray(sigma, float) ** 2
    y = np.asarray(mag, float)
    star = np.repeat(np.arange(n_stars), np.diff(offsets))
    u = (np.asarray(phase, float) % 1.0) * g
    lo = np.floor(u).astype(int) % g
    frac = u - np.floor(u)
    counts = np.diff(offsets)
    chunk = max(1, MAX_CELLS // (j * g))
    for a in range(0, n_stars, chunk):
        b = min(n_stars, a + chunk)
        sel = slice(offsets[a], offsets[b])
        rows = star[sel] - a
        # interpolation weights of each epoch on the grid: w and w·y spike trains
        spikes = np.zeros((2, b - a, g))
        ws, ks = w[sel], lo[sel]
        for vals, k in ((ws * (1 - frac[sel]), ks), (ws * frac[sel], (ks + 1) % g)):
            np.add.at(spikes[0], (rows, k), vals)
            np.add.at(spikes[1], (rows, k), vals * y[sel])
        sw = np.bincount(rows, w[sel], b - a)[:, None]
        sy = np.bincount(rows, w[sel] * y[sel], b - a)[:, None]
        syy = np.bincount(rows, w[sel] * y[sel] ** 2, b - a)[:, None]
        fw, fwy = np.conj(np.fft.rfft(spikes, axis=2))
        sx = np.fft.irfft(fw[:, None, :] * spec1[None], n=g, axis=2)    # (stars, J, shifts)
        sxx = np.fft.irfft(fw[:, None, :] * spec2[None], n=g, axis=2)
        sxy = np.fft.irfft(fwy[:, None, :] * spec1[None], n=g, axis=2)
        sw3, sy3, syy3 = sw[:, :, None], sy[:, :, None], syy[:, :, None]
        cxx = sxx - sx ** 2 / sw3
        cxy = sxy - sx * sy3 / sw3
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = cxy / cxx
            chi2 = (syy3 - sy3 ** 2 / sw3) - cxy ** 2 / cxx
        chi2 = np.where((scale > MIN_AMPLITUDE) & np.isfinite(chi2), chi2, np.inf).min(axis=2)
        if exclude is not None:
            chi2[np.asarray(exclude)[a:b, None] == bank.source_id[None, :]] = np.inf
        best = chi2.min(axis=1, keepdims=True)
        dof = np.maximum(counts[a:b, None] - 3, 1)
        tau = np.maximum(1.0, best / dof)
        with np.errstate(invalid="ignore"):
            weight = np.exp(-(chi2 - best) / (2 * tau))
        weight[~np.isfinite(weight)] = 0.0
        total = weight.sum(axis=1)
        ok = total > 0
        wn = weight[ok] / total[ok, None]
        phi[a:b][ok] = np.angle(wn @ np.exp(1j * bank.phi31)) % (2 * np.pi)
        r21[a:b][ok] = wn @ bank.r21
    return phi, r21


def bank_features(bank: TemplateBank | None, phase: np.ndarray, mag: np.ndarray,
                  sigma: np.ndarray | None, counts: np.ndarray,
                  exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`template_features` of the stars (`counts` epochs each, in order) with at most
    bank.max_epochs epochs, NaN elsewhere and without a bank; unusable `sigma` as
    `clean_sigma` makes it."""
    counts = np.asarray(counts)
    phi31, r21 = np.full(counts.size, np.nan), np.full(counts.size, np.nan)
    if bank is None or len(bank) == 0:
        return phi31, r21
    use = counts <= bank.max_epochs
    take = np.repeat(use, counts)
    offsets = np.r_[0, np.cumsum(counts[use])]
    sigma = clean_sigma(None if sigma is None else np.asarray(sigma)[take], int(take.sum()))
    phi31[use], r21[use] = template_features(
        bank, np.asarray(phase)[take], np.asarray(mag)[take], sigma, offsets,
        None if exclude is None else np.asarray(exclude)[use])
    return phi31, r21
