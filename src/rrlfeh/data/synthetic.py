"""Synthetic Gaia-DR3-like RRab and RRc stars: the pipeline's embedded default data source.

`generate` writes the same three raw tables as the Gaia archive source (schema.STARS / EPOCHS /
LABELS) plus a `truth` table, deterministically from a seed. Relations used, and their sources:
- [Fe/H]: mixture of a halo Gaussian N(-1.5, 0.35) (82 %), a metal-rich disc-like N(-0.6, 0.3)
  (12 %) and a metal-poor tail N(-2.3, 0.35) (6 %), truncated to [-3, 0.3]; halo RR Lyrae peak
  near -1.5 (e.g. Muraveva et al. 2025; Clementini et al. 2023 metallicities).
- Type: RRc with probability frac_rrc (DR3: 35 % of confirmed RR Lyrae are RRc).
- Period from [Fe/H] (metal-poor -> longer): RRab P = 0.58 - 0.11 ([Fe/H] + 1.4) + N(0, 0.055) in
  [0.42, 0.95] d, which gives corr([Fe/H], P) ~ -0.7 as on DG22 labels (SCIENCE.md); RRc
  P = 0.33 - 0.035 ([Fe/H] + 1.4) + N(0, 0.025) in [0.22, 0.43] d.
- Amplitude (Bailey diagram, G): RRab A = 0.88 - 4.0 log10(P / 0.58) - 0.20 ([Fe/H] + 1.4)
  + N(0, 0.15) in [0.2, 1.6] mag (slope of the Oosterhoff-I locus of Belokurov et al. 2018 near
  P = 0.58; at fixed P metal-poor stars are brighter-amplitude, the Oosterhoff effect);
  RRc A = 0.40 + 0.8 (P - 0.33) + N(0, 0.08) in [0.15, 0.65] mag.
- phi31: RRab from [Fe/H] = -6.93 - 6.04 P + 1.65 phi31 (arXiv:2605.13811, RMS 0.26 dex), inverted
  with a 0.26 dex draw. Real Gaia RRab curves fitted in the schema's cosine convention give
  phi31 ~ 2.2 (DG22, see synthetic_shapes), so the relation's phi31 is taken as the cosine value
  + pi (the sine convention, phi31 ~ 5.0-5.6); without this shift the curves do not look like RRab.
  RRc from the Iorio & Belokurov 2021 form [Fe/H] = a + b (P - 0.3) + c (phi31 - 3.5) in the
  cosine (Gaia) convention with a, b, c = -1.30, -8.5, 0.85 and 0.20 dex scatter: coefficients
  UNVERIFIED, chosen to give phi31 ~ 3-4.5 and a Li et al. 2023-like period slope.
- RRc R21 = 0.17 - 0.04 ([Fe/H] + 1.5) + N(0, 0.035) in [0.05, 0.35] (assumption; Li et al. 2023
  find R21 anti-correlated with [Fe/H] for RRc). Other shape terms: synthetic_shapes.
- Photometry and cadence: synthetic_sampling (SCIENCE.md noise table, DR3 cadence measured on
  ../shared/data/gaia_dr3). Dirt rates measured there: ~3.9 % variability-rejected, ~1.7 % null
  flux (rejected by photometry, NaN mag/flux).
- phi31_g_error: the formal Fourier error sqrt(2/N) sigma sqrt(1/A3^2 + 9/A1^2), inflated (model
  and phase-coverage error) with a floor and log-normal scatter, used where the Fourier fit of the
  star's epochs fails; elsewhere the catalogue's phi31_g, its error and r21_g are that fit's (what
  Gaia publishes, and what the labels below are made from); otherwise phi31_g / r21_g are
  the true values plus their errors, amplitude_g is the exact model peak-to-peak.
- Labels: made the way the real ones are. Muraveva et al. 2025 (the labels the paper trained on)
  apply a P-phi31 relation to the phi31 that Gaia's pipeline fitted on the star's own G epochs, so
  a label is a function of the curve, not the spectroscopic truth plus noise the curve cannot
  know. Here each star's clean G epochs (rrlfeh.lightcurve.derive.clean_mask; errors from
  schema.mag_error) are fitted at its true period with rrlfeh.lightcurve.features.star_features
  (default FIT_KNOBS), and its type's relation in rrlfeh.relations.LABEL_RELATIONS is applied to
  that phi31 (and P): RRab Iorio & Belokurov 2021, [Fe/H] = -1.691 - 4.722 (P - 0.6)
  + 0.681 (phi31 - 2.0); RRc the same form with pivots P = 0.3, phi31 = 3.5 and the generator's own
  UNVERIFIED coefficients above. The label gets N(0, label_spread) more (default 0.05 dex: the
  posterior spread of Muraveva's labels on dense curves, and the ~0.05 dex a P-phi31 line on our
  own fit reaches against the real labels at >= 60 epochs, SCIENCE.md); feh_error =
  label_spread (+) c * phi31_error (c: the relation's phi31 slope). A star the fit fails on (no
  finite phi31 and error) gets no label, as stars Gaia published no phi31 for have none. The true
  [Fe/H] is kept in the stars table's feh_true (NaN for the real sources).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.data.synthetic_sampling import (
    g_mag_error,
    mag_to_flux,
    make_source_ids,
    make_transit_ids,
    sample_epoch_counts,
    sample_mean_mag,
    sample_sky,
    sample_transit_times,
)
from rrlfeh.data.synthetic_shapes import (
    N_HARMONICS,
    model_mag,
    normalise,
    rrab_shape,
    rrc_shape,
)
from rrlfeh.lightcurve.derive import clean_mask
from rrlfeh.lightcurve.features import FIT_KNOBS, features_of_stars
from rrlfeh.relations import LABEL_RELATIONS, RRAB_PUBLISHED, Relation

log = logging.getLogger(__name__)

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class SyntheticSet:
    """The three raw tables (schema-conformed) and the truth they were drawn from."""

    stars: pd.DataFrame
    epochs: pd.DataFrame
    labels: pd.DataFrame
    truth: pd.DataFrame

    def model_mag(self, source_id: int, times: np.ndarray) -> np.ndarray:
        """Noise-free model G magnitude of star `source_id` at `times` (BJD(TCB) - 2455197.5 d)."""
        return truth_model_mag(self.truth.loc[self.truth.source_id == source_id].iloc[0], times)


def truth_model_mag(row: pd.Series, times: np.ndarray) -> np.ndarray:
    """Model G magnitude at `times` for one row of a `SyntheticSet.truth` table."""
    amps = np.array([row[f"amp_{k}"] for k in range(1, N_HARMONICS + 1)], dtype=float)
    phases = np.array([row[f"phase_{k}"] for k in range(1, N_HARMONICS + 1)], dtype=float)
    return model_mag(times, row["period"], row["epoch_max"], row["a0"], amps, phases)


def truncated_normal_mixture(rng: np.random.Generator, n: int,
                             components: tuple[tuple[float, float, float], ...],
                             lo: float, hi: float) -> np.ndarray:
    """Draw n values from a mixture of (weight, mean, sd) Gaussians, redrawing outside [lo, hi]."""
    w = np.array([c[0] for c in components], dtype=float)
    mu = np.array([c[1] for c in components])
    sd = np.array([c[2] for c in components])
    out = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        j = rng.choice(len(components), size=todo.size, p=w / w.sum())
        x = mu[j] + sd[j] * rng.standard_normal(todo.size)
        ok = (x >= lo) & (x <= hi)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def fit_clean_epochs(epochs: pd.DataFrame, star: np.ndarray, period: np.ndarray
                     ) -> pd.DataFrame:
    """features.FEATURES of each star (row i: star i) from the default-knob Fourier fit of its
    clean G epochs at `period`, as Gaia's pipeline measures the phi31 its labels come from."""
    ok = clean_mask(epochs)
    order = np.argsort(star[ok], kind="stable")
    offsets = np.r_[0, np.cumsum(np.bincount(star[ok], minlength=len(period)))]
    t, mag, sigma = (np.asarray(a, float)[ok][order]
                     for a in (epochs["time"], epochs["mag"], schema.mag_error(epochs)))
    return features_of_stars(t, mag, sigma, offsets, period, **FIT_KNOBS)


def phi31_slope(rel: Relation, period: np.ndarray, phi31: np.ndarray,
                r21: np.ndarray) -> np.ndarray:
    """d[Fe/H]/dphi31 of `rel` at each star (numerically: the relations are linear in their
    features, so this is the phi31 coefficient, whatever convention shift the form applies)."""
    h = 1e-6
    return (rel.predict(period, phi31 + h, r21) - rel.predict(period, phi31, r21)) / h


def relation_labels(rng: np.random.Generator, types: np.ndarray, period: np.ndarray,
                    fit: pd.DataFrame, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """([Fe/H] label, its error) of each star: its type's LABEL_RELATIONS at the fitted phi31 and
    P plus N(0, spread); error spread (+) slope * phi31_error. NaN both where the fit failed."""
    phi31, r21 = fit["phi31"].to_numpy(float), fit["r21"].to_numpy(float)
    noise = rng.standard_normal(len(period))
    feh, slope = np.full(len(period), np.nan), np.full(len(period), np.nan)
    with np.errstate(invalid="ignore"):
        for kind, rel in LABEL_RELATIONS.items():
            m = types == kind
            feh[m] = rel.predict(period[m], phi31[m], r21[m])
            slope[m] = phi31_slope(rel, period[m], phi31[m], r21[m])
        error = np.hypot(spread, slope * fit["phi31_error"].to_numpy(float))
    ok = np.isfinite(feh) & np.isfinite(error)
    return np.where(ok, feh + spread * noise, np.nan), np.where(ok, error, np.nan)


def _truncated(rng: np.random.Generator, mean: np.ndarray, sd: float, lo: float,
               hi: float) -> np.ndarray:
    """mean + N(0, sd), redrawn where outside [lo, hi] (falls back to clipping after 50 rounds)."""
    out = mean + sd * rng.standard_normal(mean.size)
    for _ in range(50):
        bad = (out < lo) | (out > hi)
        if not bad.any():
            break
        out[bad] = mean[bad] + sd * rng.standard_normal(int(bad.sum()))
    return np.clip(out, lo, hi)


def generate(n_stars: int, *, seed: int = 42, frac_rrc: float = 0.35,
             labelled_fraction: float = 1.0,
             feh_components: tuple[tuple[float, float, float], ...] = (
                 (0.82, -1.5, 0.35), (0.12, -0.6, 0.3), (0.06, -2.3, 0.35)),
             feh_range: tuple[float, float] = (-3.0, 0.3),
             rrab_period: tuple[float, float, float] = (0.58, -0.11, 0.055),
             rrc_period: tuple[float, float, float] = (0.33, -0.035, 0.025),
             rrab_relation: tuple[float, ...] = RRAB_PUBLISHED[0].coef,
             rrab_relation_scatter: float = 0.26,
             rrab_phi31_offset: float = -np.pi,
             rrc_relation: tuple[float, ...] = LABEL_RELATIONS["RRc"].coef,
             rrc_relation_scatter: float = 0.20,
             rrab_amplitude: tuple[float, float, float, float] = (0.88, -4.0, -0.20, 0.15),
             rrc_amplitude: tuple[float, float, float] = (0.40, 0.8, 0.08),
             mag_range: tuple[float, float] = (12.0, 20.0),
             mag_slope: float = 0.25,
             epochs_median: float = 55.0,
             epochs_sigma_ln: float = 0.45,
             epochs_range: tuple[int, int] = (20, 250),
             noise_scatter_ln: float = 0.10,
             outlier_frac: float = 0.04,
             outlier_flagged_share: float = 0.75,
             reject_frac: float = 0.01,
             null_frac: float = 0.017,
             phi31_error_inflation: float = 1.5,
             phi31_error_floor: float = 0.015,
             label_spread: float = 0.05,
             ) -> SyntheticSet:
    """Draw `n_stars` Gaia-DR3-like RR Lyrae stars (RRc with probability `frac_rrc`).

    Deterministic for a given seed and knobs. Period / relation tuples are (intercept, slope on
    [Fe/H] or P, ...) as in the module docstring; `labelled_fraction` of the stars get a label
    (those whose phi31 fit succeeds: see "Labels" there), with `label_spread` dex of scatter.
    """
    if n_stars < 1:
        raise ValueError(f"n_stars must be >= 1, got {n_stars}")
    if not 0.0 <= frac_rrc <= 1.0 or not 0.0 <= labelled_fraction <= 1.0:
        raise ValueError(f"frac_rrc={frac_rrc} and labelled_fraction={labelled_fraction} "
                         "must be in [0, 1]")
    if not (np.isfinite(label_spread) and label_spread >= 0):
        raise ValueError(f"label_spread must be a finite number >= 0, got {label_spread}")
    rng = np.random.default_rng(seed)
    n = n_stars

    # --- physics: [Fe/H], type, period, amplitude, phi31, shape ---------------------------------
    feh = truncated_normal_mixture(rng, n, feh_components, *feh_range)
    rrc = rng.random(n) < frac_rrc
    period = np.where(
        rrc,
        _truncated(rng, rrc_period[0] + rrc_period[1] * (feh + 1.4), rrc_period[2], 0.22, 0.43),
        _truncated(rng, rrab_period[0] + rrab_period[1] * (feh + 1.4), rrab_period[2], 0.42, 0.95))
    amp_ab = _truncated(rng, rrab_amplitude[0] + rrab_amplitude[1] * np.log10(period / 0.58)
                        + rrab_amplitude[2] * (feh + 1.4), rrab_amplitude[3], 0.2, 1.6)
    amp_c = _truncated(rng, rrc_amplitude[0] + rrc_amplitude[1] * (period - 0.33),
                       rrc_amplitude[2], 0.15, 0.65)
    amplitude = np.where(rrc, amp_c, amp_ab)

    a, b, c = rrab_relation
    feh_rel_ab = feh + rrab_relation_scatter * rng.standard_normal(n)
    phi31_ab = (feh_rel_ab - a - b * period) / c + rrab_phi31_offset
    a, b, c = rrc_relation
    feh_rel_c = feh + rrc_relation_scatter * rng.standard_normal(n)
    phi31_c = 3.5 + (feh_rel_c - a - b * (period - 0.3)) / c
    phi31 = np.where(rrc, phi31_c, phi31_ab) % TWO_PI
    r21_c = _truncated(rng, 0.17 - 0.04 * (feh + 1.5), 0.035, 0.05, 0.35)

    ratios = np.empty((n, N_HARMONICS))
    diffs = np.empty((n, N_HARMONICS))
    r_ab, p_ab = rrab_shape(rng, phi31, amplitude)
    r_c, p_c = rrc_shape(rng, phi31, r21_c)
    ratios[:] = np.where(rrc[:, None], r_c, r_ab)
    diffs[:] = np.where(rrc[:, None], p_c, p_ab)

    mean_mag = sample_mean_mag(rng, n, mag_min=mag_range[0], mag_max=mag_range[1],
                               mag_slope=mag_slope)
    a0, amps, phases = normalise(ratios, diffs, amplitude, mean_mag)
    epoch_max = 2190.0 + period * rng.random(n)

    # --- sky and identifiers ---------------------------------------------------------------------
    ra, dec = sample_sky(rng, n)
    source_id = make_source_ids(rng, ra, dec)

    # --- cadence and photometry ------------------------------------------------------------------
    counts = sample_epoch_counts(rng, n, median=epochs_median, sigma_ln=epochs_sigma_ln,
                                 n_min=epochs_range[0], n_max=epochs_range[1])
    star, time, fov = sample_transit_times(rng, counts)
    true_mag = model_mag(time, period[star], epoch_max[star], a0[star], amps[star], phases[star])
    star_noise = np.exp(noise_scatter_ln * rng.standard_normal(n))
    sigma = g_mag_error(true_mag) * star_noise[star]
    mag = true_mag + sigma * rng.standard_normal(time.size)

    m = time.size
    u = rng.random(m)
    outlier = u < outlier_frac
    flagged_outlier = outlier & (rng.random(m) < outlier_flagged_share)
    jump = (rng.choice([-1.0, 1.0], size=m)
            * np.maximum(rng.exponential(0.25, size=m), 8.0 * sigma))
    mag = np.where(outlier, mag + jump, mag)
    null = (u >= outlier_frac) & (u < outlier_frac + null_frac)
    rejected_ok = (u >= outlier_frac + null_frac) & (u < outlier_frac + null_frac + reject_frac)
    rejected = flagged_outlier | null | rejected_ok
    flux = mag_to_flux(mag)
    flux_error = flux * sigma / schema.MAG_PER_FLUX
    mag = np.where(null, np.nan, mag)
    flux = np.where(null, np.nan, flux)
    flux_error = np.where(null, np.nan, flux_error)
    transit_id = make_transit_ids(time, fov, rng.integers(0, 7, size=m))
    n_clean = np.bincount(star, weights=~rejected, minlength=n).astype(np.int64)

    # --- catalogue-like measured parameters ------------------------------------------------------
    sigma_star = g_mag_error(mean_mag) * star_noise
    n_eff = np.maximum(n_clean, 3)
    formal = np.sqrt(2.0 / n_eff) * sigma_star * np.sqrt(1.0 / amps[:, 2] ** 2
                                                          + 9.0 / amps[:, 0] ** 2)
    phi31_err = np.hypot(phi31_error_inflation * formal, phi31_error_floor) * np.exp(
        0.3 * rng.standard_normal(n))
    phi31_g = (phi31 + phi31_err * rng.standard_normal(n)) % TWO_PI
    r21 = ratios[:, 1]
    r21_err = phi31_error_inflation * np.sqrt(2.0 / n_eff) * sigma_star * np.sqrt(
        1.0 / amps[:, 1] ** 2 + 1.0 / amps[:, 0] ** 2) * r21
    r21_g = np.abs(r21 + r21_err * rng.standard_normal(n))

    types = np.where(rrc, "RRc", "RRab")
    stars = pd.DataFrame({
        "source_id": source_id, "type": types, "period": period, "epoch_max": epoch_max,
        "amplitude_g": amplitude, "mean_mag_g": mean_mag, "n_epochs_g": n_clean,
        "phi31_g": phi31_g, "phi31_g_error": phi31_err, "r21_g": r21_g, "ra": ra, "dec": dec,
        "feh_true": feh,
    })
    truth = pd.DataFrame({
        "source_id": source_id, "type": types, "period": period, "feh": feh,
        "epoch_max": epoch_max, "amplitude": amplitude, "phi31": phi31, "r21": r21,
        "mean_mag": mean_mag, "a0": a0, "n_harmonics": np.where(rrc, 4, 6),
        **{f"amp_{k}": amps[:, k - 1] for k in range(1, N_HARMONICS + 1)},
        **{f"phase_{k}": phases[:, k - 1] for k in range(1, N_HARMONICS + 1)},
        "noise_scale": star_noise,
    })
    epochs = pd.DataFrame({
        "source_id": source_id[star], "transit_id": transit_id, "time": time, "mag": mag,
        "flux": flux, "flux_error": flux_error, "rejected": rejected,
    })

    wanted = rng.random(n) < labelled_fraction
    fit = fit_clean_epochs(epochs, star, period)
    feh_obs, feh_error = relation_labels(rng, types, period, fit, label_spread)
    # the catalogue publishes the fitted phi31 / R21 (as Gaia's vari_rrlyrae does), where the fit
    # gives them; the generator's drawn values with their errors elsewhere
    for col, value in (("phi31_g", "phi31"), ("phi31_g_error", "phi31_error"), ("r21_g", "r21")):
        fitted = fit[value].to_numpy(float)
        stars[col] = np.where(np.isfinite(fitted), fitted, stars[col].to_numpy(float))
    labelled = wanted & np.isfinite(feh_obs)
    log.info("synthetic labels: %d of %d stars labelled; %d of the %d drawn for a label have no "
             "phi31 fit and stay unlabelled", labelled.sum(), n, (wanted & ~labelled).sum(),
             wanted.sum())
    labels = pd.DataFrame({"source_id": source_id, "feh": feh_obs, "feh_error": feh_error})
    labels = labels.loc[labelled]

    order = np.argsort(source_id, kind="stable")
    stars = stars.iloc[order]
    truth = truth.iloc[order].reset_index(drop=True)
    labels = labels.sort_values("source_id", kind="stable")
    epochs = epochs.sort_values(["source_id", "time"], kind="stable")
    return SyntheticSet(
        stars=schema.conform(stars, schema.STARS, "stars"),
        epochs=schema.conform(epochs, schema.EPOCHS, "epochs"),
        labels=schema.conform(labels, schema.LABELS, "labels"),
        truth=truth,
    )
