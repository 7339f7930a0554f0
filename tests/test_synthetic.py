"""Tests of the synthetic Gaia-DR3-like source: determinism, schema, cadence, noise and physics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from rrlfeh.data import schema
from rrlfeh.data.synthetic import SyntheticSet, generate, truth_model_mag
from rrlfeh.data.synthetic_sampling import G_ZERO_POINT, g_mag_error, healpix_nested
from rrlfeh.data.synthetic_shapes import N_HARMONICS, model_mag, peak_to_peak
from rrlfeh.lightcurve.features import star_features


@pytest.fixture(scope="module")
def big() -> SyntheticSet:
    return generate(1500, seed=0)


def _arrays(truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    amps = truth[[f"amp_{k}" for k in range(1, N_HARMONICS + 1)]].to_numpy()
    phases = truth[[f"phase_{k}" for k in range(1, N_HARMONICS + 1)]].to_numpy()
    return amps, phases


def _residuals(s: SyntheticSet) -> pd.DataFrame:
    """Clean epochs joined with their noise-free model magnitude."""
    t = s.truth.set_index("source_id")
    e = s.epochs.loc[~s.epochs.rejected].copy()
    rows = t.loc[e.source_id]
    amps, phases = _arrays(rows)
    e["model"] = model_mag(e.time.to_numpy(), rows.period.to_numpy(), rows.epoch_max.to_numpy(),
                           rows.a0.to_numpy(), amps, phases)
    e["noise_scale"] = rows.noise_scale.to_numpy()
    return e


def test_same_seed_same_tables_and_different_seed_differs():
    a, b, c = generate(120, seed=7), generate(120, seed=7), generate(120, seed=8)
    for name in ("stars", "epochs", "labels", "truth"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.stars.source_id, c.stars.source_id)
    assert not np.allclose(a.stars.period.sort_values(), c.stars.period.sort_values())


def test_tables_conform_to_schema_and_look_like_the_archive():
    s = generate(200, seed=1)
    for df, sch in ((s.stars, schema.STARS), (s.epochs, schema.EPOCHS),
                    (s.labels, schema.LABELS)):
        assert list(df.columns) == list(sch)
        assert {c: str(t) for c, t in df.dtypes.items()} == sch
        pd.testing.assert_frame_equal(schema.conform(df, sch, "x"), df)
    assert not s.stars[list(schema.DERIVED_FLAGS)].to_numpy().any()
    assert set(s.stars.type) == {"RRab", "RRc"}
    assert s.stars[["period", "epoch_max", "amplitude_g", "mean_mag_g", "phi31_g",
                    "phi31_g_error", "r21_g", "ra", "dec", "feh_true"]].notna().all().all()
    assert s.stars.phi31_g.between(0, 2 * np.pi).all()


def test_sizes_ids_and_labelled_fraction():
    s = generate(300, seed=2, labelled_fraction=0.5)
    assert len(s.stars) == len(s.truth) == 300
    assert 100 < len(s.labels) < 200
    assert set(s.labels.source_id) <= set(s.stars.source_id)
    assert s.stars.source_id.is_unique and s.epochs.transit_id.is_unique
    assert (s.stars.source_id > 0).all()
    assert set(s.epochs.source_id) == set(s.stars.source_id)
    # Gaia DR3 source_id = HEALPix level-12 nested index * 2**35 + running number
    pix = healpix_nested(s.stars.ra.to_numpy(), s.stars.dec.to_numpy(), order=12)
    np.testing.assert_array_equal(s.stars.source_id.to_numpy() >> 35, pix)
    assert s.stars.ra.between(0, 360).all() and s.stars.dec.between(-90, 90).all()
    assert len(generate(50, seed=2, labelled_fraction=0.0).labels) == 0


def test_healpix_faces_equal_areas_and_nesting():
    # base pixels: equatorial faces 4-7 centred on ra 0, 90, 180, 270; polar 0-3 north, 8-11 south
    pix = healpix_nested(np.array([5.0, 95.0, 185.0, 275.0, 45.0, 45.0]),
                         np.array([5.0, 0.0, 0.0, 0.0, 80.0, -80.0]), order=0)
    np.testing.assert_array_equal(pix, [4, 5, 6, 7, 0, 8])
    rng = np.random.default_rng(0)
    ra = rng.uniform(0, 360, 96_000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 96_000)))
    counts = np.bincount(healpix_nested(ra, dec, order=2), minlength=192)
    assert counts.size == 192 and np.abs(counts - 500).max() < 5 * np.sqrt(500)   # equal areas
    np.testing.assert_array_equal(healpix_nested(ra, dec, 12) >> 20, healpix_nested(ra, dec, 2))


def test_epoch_counts_cadence_and_baseline(big):
    e = big.epochs
    per_star = e.groupby("source_id").size()
    assert per_star.between(20, 250).all()
    assert 40 <= per_star.median() <= 70 and per_star.max() > 120
    clean = (~e.rejected).groupby(e.source_id).sum()
    stars = big.stars.set_index("source_id")
    np.testing.assert_array_equal(stars.loc[clean.index, "n_epochs_g"], clean.to_numpy())
    assert e.time.between(1666.0, 2705.0).all()
    assert e.groupby("source_id").time.agg(np.ptp).median() > 700
    dt_min = e.groupby("source_id").time.diff().dropna().to_numpy() * 1440.0
    pairs = np.abs(dt_min - 106.5) < 0.1
    assert 0.2 < pairs.mean() < 0.6
    assert np.mean(dt_min > 10 * 1440) > 0.2             # visits are tens of days apart
    assert (np.diff(e.time.to_numpy())[np.diff(e.source_id.to_numpy()) == 0] > 0).all()


def test_photometry_noise_follows_magnitude(big):
    r = _residuals(big)
    resid = (r.mag - r.model) / r.noise_scale
    for g in (15.0, 17.0, 19.0):
        near = (r.model - g).abs() < 0.25
        robust = 1.4826 * np.median(np.abs(resid[near] - np.median(resid[near])))
        assert robust == pytest.approx(g_mag_error(np.array([g]))[0], rel=0.2), g
    ok = big.epochs.flux.notna()
    e = big.epochs.loc[ok]
    np.testing.assert_allclose(G_ZERO_POINT - 2.5 * np.log10(e.flux), e.mag, atol=1e-9)
    sig_mag = 1.0857 * e.flux_error / e.flux
    assert sig_mag.between(5e-4, 0.1).all()


def test_dirt_rejected_null_and_unflagged_outliers(big):
    e = big.epochs
    null = e.mag.isna()
    assert (e.flux.isna() == null).all()
    assert e.rejected[null].all()
    assert 0.005 < null.mean() < 0.03
    assert 0.03 < e.rejected.mean() < 0.10
    r = _residuals(big)
    sigma = g_mag_error(r.model.to_numpy()) * r.noise_scale
    wild = np.abs(r.mag - r.model) > 6 * sigma
    assert 0.002 < wild.mean() < 0.03                    # outliers that nothing flagged


def test_rrab_period_metallicity_anticorrelation(big):
    t = big.truth
    ab, c = t.type == "RRab", t.type == "RRc"
    assert np.corrcoef(t.feh[ab], t.period[ab])[0, 1] < -0.6
    assert t.period[ab].between(0.42, 0.95).all() and 0.55 < t.period[ab].mean() < 0.61
    assert t.period[c].between(0.22, 0.43).all() and 0.31 < t.period[c].mean() < 0.35
    assert np.corrcoef(t.feh[c], t.period[c])[0, 1] < -0.3
    assert 0.25 < c.mean() < 0.45
    assert -1.7 < t.feh.median() < -1.3 and t.feh.min() < -2.6 and t.feh.max() > -0.2


def test_phi31_follows_the_relations_with_the_intended_scatter(big):
    t = big.truth
    ab, c = t.type == "RRab", t.type == "RRc"
    # RRab: [Fe/H] = -6.93 - 6.04 P + 1.65 phi31 with phi31 in the sine convention (cosine + pi)
    # (+ pi without wrapping: metal-rich RRab reach phi31 > pi, whose sine value passes 2 pi)
    pred = -6.93 - 6.04 * t.period[ab] + 1.65 * (t.phi31[ab] + np.pi)
    rms = np.sqrt(np.mean((pred - t.feh[ab]) ** 2))
    assert rms == pytest.approx(0.26, abs=0.03)
    assert 1.9 < t.phi31[ab].median() < 2.6            # real Gaia RRab in the cosine convention
    pred_c = -1.30 - 8.5 * (t.period[c] - 0.3) + 0.85 * (t.phi31[c] - 3.5)
    assert np.sqrt(np.mean((pred_c - t.feh[c]) ** 2)) == pytest.approx(0.20, abs=0.03)
    s = big.stars
    err = s.phi31_g_error
    assert (err > 0.10).mean() > 0.1 and (err < 0.05).mean() > 0.2
    assert spearmanr(s.mean_mag_g, err).statistic > 0.3
    # the catalogue's phi31_g is the Fourier fit of the star's epochs (what Gaia publishes), its
    # error the fit's: the fit's scatter about the true phi31 is what the error says (robust
    # scale: a few curves with poor phase coverage have heavier tails)
    d = ((s.phi31_g - t.phi31 + np.pi) % (2 * np.pi) - np.pi) / err
    assert 1.4826 * np.median(np.abs(d - np.median(d))) == pytest.approx(1.0, abs=0.15)


def test_fourier_ratios_and_bailey_diagram(big):
    t, s = big.truth, big.stars
    ab, c = t.type == "RRab", t.type == "RRc"
    assert 0.43 < t.r21[ab].median() < 0.52 and 0.1 < t.r21[c].median() < 0.25
    r31 = t.amp_3 / t.amp_1
    assert 0.25 < r31[ab].median() < 0.36 and 0.04 < r31[c].median() < 0.12
    assert spearmanr(np.log10(t.period[ab]), t.amplitude[ab]).statistic < -0.4
    assert t.amplitude[ab].between(0.2, 1.6).all() and (t.amplitude[ab] > 1.4).any()
    assert t.amplitude[c].between(0.15, 0.65).all()
    assert t.amplitude[c].median() < t.amplitude[ab].median()
    assert (s.amplitude_g.to_numpy() == t.amplitude.to_numpy()).all()


def test_model_peak_to_peak_maximum_and_intensity_mean(big):
    t = big.truth
    amps, phases = _arrays(t)
    np.testing.assert_allclose(peak_to_peak(amps, phases), big.stars.amplitude_g, atol=2e-4)
    x = np.linspace(0, 1, 4001)
    for _, row in t.sample(40, random_state=0).iterrows():
        m = truth_model_mag(row, row.epoch_max + x * row.period)
        assert m[0] <= m.min() + 1e-4                      # maximum light at epoch_max
        flux_mean = np.mean(10 ** (-0.4 * m[:-1]))
        assert -2.5 * np.log10(flux_mean) == pytest.approx(row.mean_mag, abs=1e-6)


def test_curves_look_like_rr_lyrae(big):
    """RRab: sawtooth, brightening >= 2x faster than fading; RRc: nearly sinusoidal, more even."""
    x = np.linspace(0, 1, 2000, endpoint=False)
    ratio = {"RRab": [], "RRc": []}
    for _, row in big.truth.sample(80, random_state=1).iterrows():
        m = truth_model_mag(row, row.epoch_max + x * row.period)
        d = np.diff(np.r_[m, m[0]])
        ratio[row.type].append(-d.min() / d.max())       # steepest rise / steepest decline
    assert min(ratio["RRab"]) > 2.0 and np.median(ratio["RRab"]) > 2.8
    assert max(ratio["RRc"]) < 3.2 and np.median(ratio["RRc"]) < 2.2
    rc = big.truth.loc[big.truth.type == "RRc"]
    assert (rc.amp_5 == 0).all() and ((rc.amp_2 / rc.amp_1) < 0.36).all()


def test_model_mag_helper_matches_epochs():
    s = generate(30, seed=4)
    sid = int(s.stars.source_id.iloc[3])
    e = s.epochs.loc[(s.epochs.source_id == sid) & ~s.epochs.rejected]
    m = s.model_mag(sid, e.time.to_numpy())
    assert np.median(np.abs(e.mag.to_numpy() - m)) < 0.05


# the label relations, written out by hand (rrlfeh.relations.LABEL_RELATIONS holds them)
def _ib21(kind: str, period: np.ndarray, phi31: np.ndarray) -> np.ndarray:
    if kind == "RRab":  # Iorio & Belokurov 2021, cosine-convention phi31
        return -1.691 - 4.722 * (period - 0.6) + 0.681 * (phi31 - 2.0)
    return -1.30 - 8.5 * (period - 0.3) + 0.85 * (phi31 - 3.5)  # RRc, unverified


def _clean(s: SyntheticSet, sid: int) -> pd.DataFrame:
    """A star's usable G epochs: not rejected, finite magnitude and flux."""
    e = s.epochs.loc[s.epochs.source_id == sid]
    return e.loc[~e.rejected & np.isfinite(e.mag) & np.isfinite(e.flux) & (e.flux > 0)]


def _lstsq_phi31(t: np.ndarray, mag: np.ndarray, period: float, k: int) -> float:
    """phi31 (cosine convention) of a k-harmonic least-squares fit, 5-sigma (MAD) clipped once."""
    x = 2 * np.pi * t / period
    a = np.column_stack([np.ones_like(x)] + [f(j * x) for j in range(1, k + 1)
                                             for f in (np.cos, np.sin)])
    keep = np.ones(len(t), bool)
    for _ in range(2):
        c, *_ = np.linalg.lstsq(a[keep], mag[keep], rcond=None)
        r = mag - a @ c
        keep = np.abs(r) < 5 * 1.4826 * np.median(np.abs(r[keep] - np.median(r[keep])))
    phi = np.arctan2(-c[2::2], c[1::2])  # a cos + b sin = A cos(x + phi), phi = atan2(-b, a)
    return float(np.mod(phi[2] - 3 * phi[0], 2 * np.pi))


@pytest.fixture(scope="module")
def labelled() -> SyntheticSet:
    return generate(300, seed=5, label_spread=0.08)


def test_labels_are_the_relation_on_an_independent_fit_of_the_epochs():
    """Dense, well-measured stars (label error < 2x the 0.05 dex spread): the label is the
    relation at the phi31 of a plain least-squares fit of the same epochs, within 4 errors. The
    fit has the curve's own harmonics (RRab 6, RRc 4): 3 would bias an RRab phi31 by up to 1 rad."""
    s = generate(300, seed=3)
    st = s.stars.merge(s.labels, on="source_id")
    dense = st.loc[(st.n_epochs_g >= 60) & (st.feh_error < 0.1)]
    picked = pd.concat([g.head(4) for _, g in dense.groupby("type")])
    assert set(picked.type) == {"RRab", "RRc"}
    for row in picked.itertuples():
        e = _clean(s, row.source_id)
        k = 6 if row.type == "RRab" else 4
        phi31 = _lstsq_phi31(e.time.to_numpy(), e.mag.to_numpy(), row.period, k)
        diff = row.feh - _ib21(row.type, row.period, phi31)
        assert abs(diff) < 4 * row.feh_error, (row.type, row.source_id, diff)


def test_true_feh_is_kept_in_the_stars_table_and_the_labels_follow_it(tmp_path):
    from rrlfeh.config import AcquireParams
    from rrlfeh.stages import acquire

    p = AcquireParams(source="synthetic", out_dir=tmp_path / "raw",
                      synthetic={"n_stars": 300, "seed": 11})
    acquire.run(p, tmp_path / "acquire.json")
    stars = pd.read_parquet(tmp_path / "raw" / "stars.parquet")
    labels = pd.read_parquet(tmp_path / "raw" / "labels.parquet")
    assert stars.feh_true.between(-3.0, 0.3).all()
    lab = labels.merge(stars, on="source_id")
    ab = lab.loc[lab.type == "RRab"]
    assert np.corrcoef(ab.feh, ab.feh_true)[0, 1] > 0.7
    assert (lab.feh != lab.feh_true).all()       # a label is not the truth


def test_labels_scatter_around_the_relation_by_the_spread(labelled):
    s = labelled
    rows = []
    for row in s.stars.itertuples():
        e = _clean(s, row.source_id)
        f = star_features(e.time.to_numpy(), e.mag.to_numpy(), schema.mag_error(e), row.period)
        rows.append((row.source_id, row.type, row.period, f["phi31"], f["phi31_error"]))
    fit = pd.DataFrame(rows, columns=["source_id", "type", "period", "phi31", "phi31_error"])
    failed = fit.phi31.isna() | fit.phi31_error.isna()
    assert set(fit.source_id[failed]) == set(s.stars.source_id) - set(s.labels.source_id)
    lab = s.labels.merge(fit, on="source_id")
    rel = np.concatenate([_ib21(k, g.period.to_numpy(), g.phi31.to_numpy())
                          for k, g in lab.groupby("type")])
    resid = np.concatenate([g.feh.to_numpy() for _, g in lab.groupby("type")]) - rel
    assert np.std(resid) == pytest.approx(0.08, rel=0.2)
    assert abs(np.mean(resid)) < 0.08 * 4 / np.sqrt(len(resid))
    # the error: the spread with the relation's propagated phi31 error, finite for every label
    c = np.where(lab.type == "RRab", 0.681, 0.85)
    np.testing.assert_allclose(lab.feh_error, np.hypot(0.08, c * lab.phi31_error), rtol=1e-4)
    assert np.isfinite(lab.feh_error).all() and (lab.feh_error >= 0.08).all()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_stars"):
        generate(0)
    with pytest.raises(ValueError, match="frac_rrc"):
        generate(10, frac_rrc=1.5)
    with pytest.raises(ValueError, match="label_spread"):
        generate(10, label_spread=-0.1)
