"""Light curves in, fixed-length standardised curves out: fold -> periodic spline -> resample ->
standardise, for one star or a million in the same vectorised code (also used at serving time).

Input layout (both entry points): flat per-epoch arrays (`source_id`, `time` or `phase`, `mag`,
optional `mag_error`) in any order, linked to per-star arrays (`period`, `epoch_max`) through
`star_id`; without `star_id` the per-star arrays follow `np.unique(source_id)` (ascending ids).
Output rows follow `star_id`. Every star either comes back processed or is listed in the rejected
table with its reason; a bad star never stops the batch.

Rejection rules, all per star (a star collects every reason that applies, joined by '; '):
- its source_id has epochs but is not in `star_id`;
- period not finite or <= 0 (preprocess_folded: NaN means unknown and is accepted), epoch_max
  not finite;
- epochs with non-finite time/phase, mag (or mag_error, or mag_error <= 0) or a mag outside
  MAG_LIMITS are dropped; the star is
  rejected when more than `max_nonfinite_fraction` of its epochs were dropped;
- repeated times (preprocess_light_curves only: a repeated transit means broken input);
- fewer than `min_points` usable epochs;
- largest phase gap (wrapping round 1 -> 0) above `max_phase_gap` (the spline would invent the
  missing part of the cycle);
- the spline fit fails (normal matrix not positive definite, non-finite result) or the smooth curve
  is flat (std below `min_std`, cannot be standardised).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.lightcurve.features import features_of_stars
from rrlfeh.lightcurve.templates import TemplateBank, bank_features
from rrlfeh.preprocess.fold import (
    count_adjacent_equal,
    fold_phase,
    max_phase_gap,
    offsets_from_sorted,
    sort_by_star_phase,
    star_index,
    wrap_phase,
)
from rrlfeh.preprocess.spline import (
    SplineFit,
    evaluate_shifted,
    evaluate_splines,
    fit_periodic_splines,
    phase_of_minimum,
    ragged_median,
    residual_rms,
)

# magnitudes no star has in Gaia G (or in the standardised folded curves): corrupt values such
# as 1e30 or -99 fill-ins, unusable like NaN (a safety bound, not a quality cut)
MAG_LIMITS = (-5.0, 35.0)


@dataclass(frozen=True)
class ProcessedCurves:
    """Preprocessed light curves, one row a star (arrays aligned on `source_id`)."""

    source_id: np.ndarray      # (N,) int64
    curves: np.ndarray         # (N, n_points) float32, standardised smooth magnitude
    phase_grid: np.ndarray     # (n_points,) phases k / n_points, k = 0..n_points-1
    time_in_cycle: np.ndarray  # (N, n_points) float32, phase_grid * period (d); NaN if no period
    period: np.ndarray         # (N,) d, NaN when unknown
    mean_mag: np.ndarray       # (N,) phase-averaged magnitude of the smooth curve
    std_mag: np.ndarray        # (N,) std of the smooth curve over the phase grid (mag)
    amplitude: np.ndarray      # (N,) peak-to-peak of the smooth curve (mag)
    n_epochs: np.ndarray       # (N,) epochs used in the fit
    n_dropped: np.ndarray      # (N,) epochs dropped as non-finite
    n_clipped: np.ndarray      # (N,) epochs left out of the final fit as outliers
    log10_lam: np.ndarray      # (N,) chosen smoothing, relative to the star's scale
    edf: np.ndarray            # (N,) effective degrees of freedom of the fit
    resid_rms: np.ndarray      # (N,) RMS of data minus smooth curve (mag, unweighted)
    gcv: np.ndarray            # (N,) GCV score at the chosen smoothing (mag^2)
    max_phase_gap: np.ndarray  # (N,) largest phase gap of the data
    phase_shift: np.ndarray    # (N,) phase moved to 0 by align_max (0 when not aligned)
    # the Fourier fit of the star's usable epochs (rrlfeh.lightcurve.features; NaN if none)
    phi31: np.ndarray          # (N,) rad in [0, 2 pi), cosine convention
    phi31_error: np.ndarray    # (N,) rad
    r21: np.ndarray            # (N,) A2 / A1
    a1: np.ndarray             # (N,) mag
    fourier_harmonics: np.ndarray  # (N,) harmonics of the fit (chosen by BIC)
    # φ31, R21 from the dense curves' shapes (rrlfeh.lightcurve.templates; NaN without a bank
    # or above its max_epochs: the fit's values serve there)
    phi31_template: np.ndarray | None = None
    r21_template: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.source_id.size)

    def to_frame(self) -> pd.DataFrame:
        """Per-star scalars (everything but the curves and the grids) as a DataFrame."""
        skip = {"curves", "phase_grid", "time_in_cycle"}
        return pd.DataFrame({f.name: getattr(self, f.name) for f in fields(self)
                             if f.name not in skip})


@dataclass(frozen=True)
class _Knobs:
    """Settings shared by both entry points (documented on `preprocess_light_curves`)."""

    n_points: int
    min_points: int
    max_phase_gap: float
    max_nonfinite_fraction: float
    error_floor: float
    min_std: float
    n_basis: int
    penalty_order: int
    criterion: str
    gcv_gamma: float
    log10_lam_min: float
    log10_lam_max: float
    n_lam: int
    min_resid_dof: float
    chunk_size: int
    align_max: bool
    n_threads: int
    clip_sigma: float | None
    clip_min_mag: float
    clip_window: int

    @classmethod
    def of(cls, arguments: dict) -> _Knobs:
        """The knobs among an entry point's arguments (its `locals()` on entry)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls)})


def preprocess_light_curves(
    source_id: np.ndarray, time: np.ndarray, mag: np.ndarray, period: np.ndarray,
    epoch_max: np.ndarray, *, star_id: np.ndarray | None = None,
    mag_error: np.ndarray | None = None, n_points: int = 264, min_points: int = 12,
    max_phase_gap: float = 0.25, max_nonfinite_fraction: float = 0.2, error_floor: float = 0.0,
    min_std: float = 1e-4, n_basis: int = 32, penalty_order: int = 2, criterion: str = "reml",
    gcv_gamma: float = 1.0, log10_lam_min: float = -6.0, log10_lam_max: float = 4.0,
    n_lam: int = 51, min_resid_dof: float = 2.0, chunk_size: int = 2048, align_max: bool = False,
    n_threads: int = 1, clip_sigma: float | None = 10.0, clip_min_mag: float = 0.4,
    clip_window: int = 3, feature_error: np.ndarray | None = None,
    fourier: dict | None = None, templates: TemplateBank | None = None,
    template_exclude: np.ndarray | None = None,
) -> tuple[ProcessedCurves, pd.DataFrame]:
    """Fold, smooth, resample and standardise light curves given in time.

    source_id, time (BJD(TCB) - 2455197.5 d), mag, mag_error: flat, one entry per epoch.
    period (d), epoch_max (same time system): one entry per star of `star_id`.
    mag_error, when given, weights the fit by 1 / (mag_error^2 + error_floor^2).
    The smoothing spline: periodic cubic P-spline, `n_basis` basis functions, difference penalty of
    `penalty_order`, smoothing chosen per star by `criterion` ('reml' or 'gcv', GCV inflated by
    `gcv_gamma`) on `n_lam` log-spaced values in [log10_lam_min, log10_lam_max] (relative), fits
    keeping at least `min_resid_dof` residual degrees of freedom; `chunk_size` stars at a time,
    `n_threads` chunks in parallel.
    Outliers: epochs outside the bracket of the medians of their `clip_window` phase neighbours
    before and after by more than both `clip_sigma` robust sigmas and `clip_min_mag` are left
    out of the fit (clip_sigma None: none); never below `min_points` epochs. In n_clipped.
    align_max: resample from the smooth curve's maximum light (phase shift reported), for inputs
    whose epoch/phase zero is not at maximum (e.g. DG22, maximum near phase 0.65).
    Per-star features (phi31, r21, ...): the Fourier fit of the same usable epochs in phase
    (`rrlfeh.lightcurve.features`, knobs `fourier`), weighted by `feature_error` (per epoch, mag;
    None or unusable values: equal weights), whatever `mag_error` does to the spline.
    `templates`: a bank of dense curves of the type (`rrlfeh.lightcurve.templates`) that gives
    phi31_template, r21_template from the same epochs; `template_exclude` (per star of
    `star_id`): the template each star may not use (its own, when the bank holds it).
    Returns (processed curves in `star_id` order, rejected table [source_id, reason]).
    """
    knobs = _Knobs.of(locals())
    sid, t, m, err = _epoch_arrays(source_id, time, mag, mag_error, "time")
    feat_err = _feature_error(feature_error, sid.size)
    stars, idx = _link(sid, star_id)
    period = _star_array(period, stars, "period")
    epoch_max = _star_array(epoch_max, stars, "epoch_max")
    reasons = _Reasons(stars)
    reasons.add_unknown(sid[idx < 0])
    bad_period = ~(np.isfinite(period) & (period > 0))
    reasons.add(bad_period, lambda i: f"invalid period {period[i]:g} d (must be finite and > 0)")
    bad_epoch = ~np.isfinite(epoch_max)
    reasons.add(bad_epoch, lambda i: f"invalid epoch_max {epoch_max[i]:g} (must be finite)")
    phase = fold_phase(t, epoch_max[np.maximum(idx, 0)], period[np.maximum(idx, 0)])
    return _smooth_batch(stars, idx, phase, t, m, err, period, reasons, knobs,
                         foldable=~(bad_period | bad_epoch), check_duplicates=True,
                         xname="time", feat_err=feat_err, fourier=fourier,
                         templates=templates, template_exclude=template_exclude)


def preprocess_folded(
    source_id: np.ndarray, phase: np.ndarray, mag: np.ndarray, *,
    star_id: np.ndarray | None = None, period: np.ndarray | None = None,
    mag_error: np.ndarray | None = None, n_points: int = 264, min_points: int = 12,
    max_phase_gap: float = 0.25, max_nonfinite_fraction: float = 0.2, error_floor: float = 0.0,
    min_std: float = 1e-4, n_basis: int = 32, penalty_order: int = 2, criterion: str = "reml",
    gcv_gamma: float = 1.0, log10_lam_min: float = -6.0, log10_lam_max: float = 4.0,
    n_lam: int = 51, min_resid_dof: float = 2.0, chunk_size: int = 2048, align_max: bool = False,
    n_threads: int = 1, clip_sigma: float | None = 10.0, clip_min_mag: float = 0.4,
    clip_window: int = 3, feature_error: np.ndarray | None = None,
    fourier: dict | None = None, templates: TemplateBank | None = None,
    template_exclude: np.ndarray | None = None,
) -> tuple[ProcessedCurves, pd.DataFrame]:
    """Smooth, resample and standardise curves that are already folded (maximum near phase 0).

    Like `preprocess_light_curves` with `phase` (wrapped into [0, 1)) instead of time; `period`
    (per star, optional, NaN = unknown) only fills `time_in_cycle`. Repeated phases are allowed.
    """
    knobs = _Knobs.of(locals())
    sid, ph, m, err = _epoch_arrays(source_id, phase, mag, mag_error, "phase")
    feat_err = _feature_error(feature_error, sid.size)
    stars, idx = _link(sid, star_id)
    reasons = _Reasons(stars)
    reasons.add_unknown(sid[idx < 0])
    if period is None:
        period = np.full(stars.size, np.nan)
    period = _star_array(period, stars, "period")
    bad_period = ~np.isnan(period) & ~(np.isfinite(period) & (period > 0))
    reasons.add(bad_period,
                lambda i: f"invalid period {period[i]:g} d (must be > 0, or NaN if unknown)")
    with np.errstate(invalid="ignore"):
        ph = wrap_phase(ph)
    return _smooth_batch(stars, idx, ph, ph, m, err, period, reasons, knobs,
                         foldable=~bad_period, check_duplicates=False, xname="phase",
                         feat_err=feat_err, fourier=fourier, templates=templates,
                         template_exclude=template_exclude)


def preprocess_tables(epochs: pd.DataFrame, stars: pd.DataFrame, *, use_mag_error: bool = False,
                      **knobs) -> tuple[ProcessedCurves, pd.DataFrame]:
    """`preprocess_light_curves` on the raw tables: epochs (schema EPOCHS; rows flagged `rejected`
    are left out as Gaia flagged them) and stars (source_id, period, epoch_max). With
    `use_mag_error` the fit is weighted by mag_error = 1.0857 flux_error / flux (off by default,
    as in the paper: on real DR3 curves the weights did not change the held-out error).
    `knobs` go to `preprocess_light_curves`."""
    clean = epochs.loc[~epochs["rejected"].to_numpy(bool)]
    errors = schema.mag_error(clean)
    return preprocess_light_curves(
        clean["source_id"].to_numpy(np.int64), clean["time"].to_numpy(float),
        clean["mag"].to_numpy(float), stars["period"].to_numpy(float),
        stars["epoch_max"].to_numpy(float), star_id=stars["source_id"].to_numpy(np.int64),
        mag_error=errors if use_mag_error else None, feature_error=errors, **knobs)


class _Reasons:
    """Collects rejection reasons per star; a star may have several."""

    def __init__(self, stars: np.ndarray) -> None:
        self.stars = stars
        self.text = np.full(stars.size, "", dtype=object)
        self.extra: list[tuple[int, str]] = []

    def add(self, mask: np.ndarray, message) -> None:
        """Append `message(i)` to the reasons of every star i where `mask` is true."""
        for i in np.flatnonzero(mask):
            self.text[i] = f"{self.text[i]}; {message(i)}" if self.text[i] else message(i)

    def add_unknown(self, source_ids: np.ndarray) -> None:
        """Epochs of stars that are not in the star table (no period/epoch for them)."""
        for s in np.unique(source_ids):
            self.extra.append((int(s), "epochs given but source_id not in star_id "
                                       "(no period/epoch_max for it)"))

    @property
    def rejected(self) -> np.ndarray:
        return self.text != ""

    def frame(self) -> pd.DataFrame:
        bad = self.rejected
        ids = [*self.stars[bad].tolist(), *(s for s, _ in self.extra)]
        why = [*self.text[bad].tolist(), *(r for _, r in self.extra)]
        return pd.DataFrame({"source_id": pd.Series(ids, dtype="int64"),
                             "reason": pd.Series(why, dtype="string")})


def _epoch_arrays(source_id, x, mag, mag_error, name: str):
    """The flat per-epoch inputs as numpy arrays of equal length (ValueError otherwise)."""
    sid = np.asarray(source_id).astype(np.int64, copy=False).ravel()
    x, m = _numbers(x), _numbers(mag)
    err = None if mag_error is None else _numbers(mag_error)
    sizes = {"source_id": sid.size, name: x.size, "mag": m.size}
    if err is not None:
        sizes["mag_error"] = err.size
    if len(set(sizes.values())) != 1:
        raise ValueError(f"per-epoch arrays must have equal lengths, got {sizes}")
    return sid, x, m, err


def _feature_error(values, n: int) -> np.ndarray | None:
    """Per-epoch magnitude errors of the Fourier features (None: equal weights)."""
    if values is None:
        return None
    err = _numbers(values)
    if err.size != n:
        raise ValueError(f"feature_error has {err.size} entries but there are {n} epochs")
    return err


def _numbers(values) -> np.ndarray:
    """A flat float64 array; entries that are not numbers (text, None in an object array) are
    NaN, so their star is judged by the usable-epoch rules instead of the whole batch failing."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr.astype(float, copy=False).ravel()
    return pd.to_numeric(pd.Series(arr.ravel(), dtype=object), errors="coerce").to_numpy(float)


def _link(sid: np.ndarray, star_id) -> tuple[np.ndarray, np.ndarray]:
    """(star ids, per-epoch row in them or -1)."""
    stars = np.unique(sid) if star_id is None else np.asarray(star_id).astype(np.int64).ravel()
    return stars, star_index(sid, stars)


def _star_array(values, stars: np.ndarray, name: str) -> np.ndarray:
    """A per-star input as a float array aligned with `stars` (ValueError on a length mismatch)."""
    out = _numbers(values)
    if out.size != stars.size:
        raise ValueError(f"{name} has {out.size} entries but there are {stars.size} stars")
    return out


def _smooth_batch(stars, idx, phase, order_key, m, err, period, reasons: _Reasons, k: _Knobs,
                  *, foldable: np.ndarray, check_duplicates: bool, xname: str,
                  feat_err: np.ndarray | None = None, fourier: dict | None = None,
                  templates: TemplateBank | None = None,
                  template_exclude: np.ndarray | None = None):
    """Shared tail: epoch checks, spline fits, resampling, standardisation, rejection table."""
    n_stars = stars.size
    known = idx >= 0
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(order_key) & (m > MAG_LIMITS[0]) & (m < MAG_LIMITS[1])
    if err is not None:
        with np.errstate(invalid="ignore"):
            finite &= np.isfinite(err) & (err > 0)
    n_total = np.bincount(idx[known], minlength=n_stars)
    n_dropped = np.bincount(idx[known & ~finite], minlength=n_stars)
    reasons.add(n_total == 0, lambda i: "no epochs")
    too_many = (n_total > 0) & (n_dropped > k.max_nonfinite_fraction * n_total)
    reasons.add(too_many, lambda i: f"{n_dropped[i]} of {n_total[i]} epochs unusable "
                                    f"(non-finite {xname}/mag/mag_error, mag_error <= 0 or "
                                    f"mag outside {MAG_LIMITS[0]:g}..{MAG_LIMITS[1]:g}; "
                                    f"> {k.max_nonfinite_fraction:g} of them)")

    keep = known & finite & foldable[np.maximum(idx, 0)]
    sel = np.flatnonzero(keep)
    order = sel[sort_by_star_phase(idx[sel], phase[sel], order_key[sel])]
    star_sorted = idx[order]
    offsets = offsets_from_sorted(star_sorted, n_stars)
    ph_s, m_s = phase[order], m[order]
    counts = np.diff(offsets)
    gaps = max_phase_gap(ph_s, offsets)
    if check_duplicates:
        dups = count_adjacent_equal(order_key[order], offsets)
        reasons.add(dups > 0, lambda i: f"duplicated times ({dups[i]} repeats)")
    few = foldable & (n_total > 0) & (counts < k.min_points)
    reasons.add(few, lambda i: f"too few points: {counts[i]} usable < {k.min_points}")
    wide = foldable & (counts >= 2) & (gaps > k.max_phase_gap)
    reasons.add(wide, lambda i: f"phase gap {gaps[i]:.3f} > {k.max_phase_gap:g}")

    # fit the stars that passed, as one contiguous ragged batch
    good = ~reasons.rejected
    take = good[star_sorted]
    fit_offsets = offsets_from_sorted(np.cumsum(good)[star_sorted[take]] - 1, int(good.sum()))
    x_fit, y_fit = ph_s[take], m_s[take]
    w_fit = None if err is None else 1.0 / (err[order][take] ** 2 + k.error_floor ** 2)
    s_fit = None if feat_err is None else feat_err[order][take]
    n_clipped = np.zeros(fit_offsets.size - 1, np.int64)
    if k.clip_sigma is not None and x_fit.size:
        out = _phase_outliers(x_fit, y_fit, fit_offsets, k)
        if out.any():
            star = np.repeat(np.arange(fit_offsets.size - 1), np.diff(fit_offsets))
            n_clipped = np.bincount(star[out], minlength=fit_offsets.size - 1)
            fit_offsets = offsets_from_sorted(star[~out], fit_offsets.size - 1)
            x_fit, y_fit = x_fit[~out], y_fit[~out]
            w_fit = None if w_fit is None else w_fit[~out]
            s_fit = None if s_fit is None else s_fit[~out]
    fit = _fit(x_fit, y_fit, w_fit, fit_offsets, k)
    grid = np.arange(k.n_points) / k.n_points
    curves, mean, std, amplitude, shift = _resample(fit, grid, k.align_max, k.chunk_size)
    resid_rms = residual_rms(fit, x_fit, y_fit, fit_offsets, k.chunk_size)
    good_rows = np.flatnonzero(good)
    failed = np.zeros(n_stars, bool)
    failed[good_rows] = ~fit.ok
    reasons.add(failed, lambda i: "spline fit failed (ill-conditioned or non-finite)")
    flat = np.zeros(n_stars, bool)
    flat[good_rows] = fit.ok & ~(std >= k.min_std)
    std_full = np.full(n_stars, np.nan)
    std_full[good_rows] = std
    reasons.add(flat, lambda i: f"flat smooth curve: std {std_full[i]:.2g} mag < {k.min_std:g}")

    ok = fit.ok & (std >= k.min_std)
    rows = good_rows[ok]
    keep_fit = np.repeat(ok, np.diff(fit_offsets))
    feats = features_of_stars(x_fit[keep_fit], y_fit[keep_fit],
                              None if s_fit is None else s_fit[keep_fit],
                              np.r_[0, np.cumsum(np.diff(fit_offsets)[ok])], 1.0,
                              shape=False, **(fourier or {}))  # its amplitude: the smooth curve's
    exclude = (None if template_exclude is None
               else np.asarray(template_exclude, np.int64)[rows])
    tmpl_phi31, tmpl_r21 = bank_features(
        templates, x_fit[keep_fit], y_fit[keep_fit], None if s_fit is None else s_fit[keep_fit],
        np.diff(fit_offsets)[ok], exclude)
    out = ProcessedCurves(
        source_id=stars[rows].astype(np.int64), curves=curves if ok.all() else curves[ok],
        phase_grid=grid, time_in_cycle=(grid[None, :] * period[rows, None]).astype(np.float32),
        period=period[rows], mean_mag=mean[ok], std_mag=std[ok], amplitude=amplitude[ok],
        n_epochs=counts[rows].astype(np.int64), n_dropped=n_dropped[rows].astype(np.int64),
        n_clipped=n_clipped[ok],
        log10_lam=fit.log10_lam[ok], edf=fit.edf[ok], resid_rms=resid_rms[ok], gcv=fit.gcv[ok],
        max_phase_gap=gaps[rows], phase_shift=shift[ok],
        phi31=feats["phi31"].to_numpy(), phi31_error=feats["phi31_error"].to_numpy(),
        r21=feats["r21"].to_numpy(), a1=feats["a1"].to_numpy(),
        fourier_harmonics=feats["n_harmonics"].to_numpy(),
        phi31_template=tmpl_phi31, r21_template=tmpl_r21)
    return out, reasons.frame()


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, offsets: np.ndarray,
         k: _Knobs) -> SplineFit:
    """The periodic smoothing splines of a ragged batch, with the knobs' settings."""
    return fit_periodic_splines(
        x, y, offsets, weights=w, n_basis=k.n_basis, penalty_order=k.penalty_order,
        log10_lam_min=k.log10_lam_min, log10_lam_max=k.log10_lam_max, n_lam=k.n_lam,
        min_resid_dof=k.min_resid_dof, criterion=k.criterion, gcv_gamma=k.gcv_gamma,
        chunk_size=k.chunk_size, n_threads=k.n_threads)


def _phase_outliers(x: np.ndarray, y: np.ndarray, offsets: np.ndarray,
                    k: _Knobs) -> np.ndarray:
    """Epochs lying outside the bracket of their neighbours in phase: beyond both the median of
    the `clip_window` epochs before and the median of those after (wrapping round the cycle), by
    more than clip_sigma robust sigmas and clip_min_mag. A point on the steep RRab rise lies
    between its two sides and is kept; a lone wild point, which a smoothing spline would bend
    to, lies outside both. x sorted by phase within each star; a star keeps min_points."""
    counts = np.diff(offsets)
    star = np.repeat(np.arange(counts.size), counts)
    n = counts[star]
    pos = np.arange(x.size) - offsets[star]

    def side(steps: np.ndarray) -> np.ndarray:
        return y[offsets[star][:, None] + np.mod(pos[:, None] + steps[None, :], n[:, None])]

    before = side(np.arange(-k.clip_window, 0))
    after = side(np.arange(1, k.clip_window + 1))
    lo = np.minimum(np.median(before, axis=1), np.median(after, axis=1))
    hi = np.maximum(np.median(before, axis=1), np.median(after, axis=1))
    outside = np.maximum(0.0, np.maximum(y - hi, lo - y))
    noise = np.abs(y - np.median(np.concatenate([before, after], axis=1), axis=1))
    sigma = 1.4826 * ragged_median(noise, offsets)
    out = (outside > k.clip_sigma * sigma[star]) & (outside > k.clip_min_mag)
    allowed = counts - np.bincount(star[out], minlength=counts.size) >= k.min_points
    return out & allowed[star]


def _resample(fit: SplineFit, grid: np.ndarray, align_max: bool, chunk_size: int):
    """Smooth curves on the grid, chunk by chunk (bounded float64 memory): standardised float32
    curves, mean, std and peak-to-peak (mag), and the phase shift applied (align_max)."""
    n = fit.coef.shape[0]
    curves = np.empty((n, grid.size), dtype=np.float32)
    mean, std, amplitude, shift = (np.full(n, np.nan) for _ in range(4))
    for s0 in range(0, n, chunk_size):
        part = _slice_fit(fit, slice(s0, min(s0 + chunk_size, n)))
        smooth = evaluate_splines(part, grid)
        if align_max:
            sh = np.where(part.ok, phase_of_minimum(np.nan_to_num(smooth), grid), 0.0)
            smooth = evaluate_shifted(part, grid, sh)
            shift[s0:s0 + len(sh)] = sh
        else:
            shift[s0:s0 + len(smooth)] = 0.0
        mu, sd = smooth.mean(axis=1), smooth.std(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            curves[s0:s0 + len(smooth)] = (smooth - mu[:, None]) / sd[:, None]
        mean[s0:s0 + len(smooth)], std[s0:s0 + len(smooth)] = mu, sd
        amplitude[s0:s0 + len(smooth)] = smooth.max(axis=1) - smooth.min(axis=1)
    return curves, mean, std, amplitude, shift


def _slice_fit(fit: SplineFit, rows: slice) -> SplineFit:
    """The fits of a contiguous range of stars."""
    return SplineFit(**{f.name: getattr(fit, f.name)[rows] for f in fields(SplineFit)})
