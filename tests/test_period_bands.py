"""Periods from G, BP and RP together: the joint search finds more periods of sparse noisy
curves, leaves G-only results as they were, and every way in (derive, serving inputs, the
scoring pipeline) carries the BP/RP epochs to it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_period import RRAB_SHAPE, RRC_SHAPE, fourier_model, gaia_times, shape_phases

from rrlfeh.lightcurve.derive import derive_light_curve_parameters, derive_star
from rrlfeh.lightcurve.period import _band_map, search_period, search_period_bands
from rrlfeh.serving.inputs import RequestError, read_epoch_frame, read_request
from rrlfeh.serving.pipeline import ScoringModel, score_request

GAIA = Path(__file__).parent / "data" / "gaia"
# band: (amplitude scale, mean offset, noise relative to G, time lag in d after G)
BANDS = {"G": (1.0, 0.0, 1.0, 0.0), "BP": (1.5, 0.35, 1.5, 3e-5), "RP": (0.65, -0.55, 1.0, 5e-5)}
ZERO_POINT = 25.6874


def simulate_bands(rng: np.random.Generator, noise: float) -> dict:
    """One star in G, BP, RP: one Fourier shape (RRab 70 %, RRc 30 %), each band scaled and
    shifted, 15-25 Gaia-like transits over ~1000 d, Gaussian noise `noise` (G) per point."""
    rrc = rng.random() < 0.3
    period = rng.uniform(0.25, 0.4) if rrc else rng.uniform(0.45, 0.85)
    ratios, phi_k1 = RRC_SHAPE if rrc else RRAB_SHAPE
    a1 = rng.uniform(0.12, 0.2) if rrc else rng.uniform(0.2, 0.35)
    phases = shape_phases(phi_k1, rng.uniform(0, 2 * np.pi))
    t_g = gaia_times(rng, int(rng.integers(15, 26)))
    parts = []
    for band, (scale, offset, rel_noise, lag) in BANDS.items():
        t = t_g + lag
        sigma = noise * rel_noise * rng.uniform(0.7, 1.3, len(t))
        mag = fourier_model(t, period, 2000.0, 17.0 + offset, a1 * scale * ratios, phases)
        parts.append(pd.DataFrame({"time": t, "mag": mag + rng.normal(0, sigma),
                                   "sigma": sigma, "band": band}))
    return {"period": period, "points": pd.concat(parts, ignore_index=True)}


def arrays(points: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(t, mag, sigma, band) of a star's points."""
    return tuple(points[c].to_numpy() for c in ("time", "mag", "sigma", "band"))


def as_epochs(source_id: int, points: pd.DataFrame) -> pd.DataFrame:
    """schema.EPOCHS rows (plus `band`) of a star's points."""
    flux = 10 ** (-0.4 * (points["mag"].to_numpy() - ZERO_POINT))
    return pd.DataFrame({"source_id": source_id, "transit_id": np.arange(len(points)),
                         "time": points["time"].to_numpy(), "mag": points["mag"].to_numpy(),
                         "flux": flux, "flux_error": flux * points["sigma"].to_numpy() / 1.0857,
                         "rejected": False, "band": points["band"].to_numpy()})


@pytest.fixture(scope="module")
def noisy_stars() -> list[dict]:
    """80 faint sparse stars (G noise 0.06 mag against 0.5-0.9 mag amplitudes)."""
    rng = np.random.default_rng(5)
    return [simulate_bands(rng, noise=0.06) for _ in range(80)]


def right(period: float, truth: float) -> bool:
    return abs(period / truth - 1) < 1e-3


def test_joint_search_recovers_more_periods_than_g_alone(noisy_stars):
    from threadpoolctl import threadpool_limits

    g_ok, joint_ok, all_bands = [], [], 0
    with threadpool_limits(limits=1):  # tiny matrices: BLAS threads only cost
        for star in noisy_stars:
            t, mag, sigma, band = arrays(star["points"])
            g = band == "G"
            g_ok.append(right(search_period(t[g], mag[g], sigma[g]).period, star["period"]))
            found = search_period_bands(t, mag, sigma, band)
            all_bands += found.bands == ("G", "BP", "RP")  # RP of the faintest RRc: no signal
            joint_ok.append(right(found.period, star["period"]))
    g_ok, joint_ok = np.array(g_ok), np.array(joint_ok)
    assert all_bands >= 0.75 * len(noisy_stars)
    assert joint_ok.sum() >= g_ok.sum() + 8, (g_ok.sum(), joint_ok.sum())
    # on the same stars: far more found only jointly than lost by joining
    assert (joint_ok & ~g_ok).sum() >= 3 * (g_ok & ~joint_ok).sum() + 1


def test_band_scales_and_offsets_come_from_the_data():
    star = simulate_bands(np.random.default_rng(2), noise=0.005)
    p = star["points"]
    g = p[p["band"] == "G"]
    for band, (scale, offset, _, _) in BANDS.items():
        b = p[p["band"] == band]
        got = _band_map(g["mag"].to_numpy(), g["sigma"].to_numpy(), b["mag"].to_numpy(),
                        b["sigma"].to_numpy())
        assert got[0] == pytest.approx(scale, rel=0.1)
        assert got[1] + got[0] * 17.0 == pytest.approx(17.0 + offset, abs=0.05)


def test_g_only_results_are_unchanged(noisy_stars):
    for star in noisy_stars[:10]:
        t, mag, sigma, band = arrays(star["points"])
        g = band == "G"
        alone = search_period(t[g], mag[g], sigma[g])
        for found in (search_period_bands(t[g], mag[g], sigma[g], band[g]),
                      # BP sharing too few transits with G to be scaled: G alone again
                      search_period_bands(t[g | (band == "BP") & (t < t[g][3])],
                                          mag[g | (band == "BP") & (t < t[g][3])],
                                          sigma[g | (band == "BP") & (t < t[g][3])],
                                          band[g | (band == "BP") & (t < t[g][3])])):
            assert found.bands == ("G",)
            for f in fields(alone):
                if f.name not in ("inliers", "bands"):
                    assert getattr(found, f.name) == getattr(alone, f.name)
            assert (found.inliers[: g.sum()] == alone.inliers).all()
    epochs = pd.concat([as_epochs(i, s["points"].query("band == 'G'"))
                        for i, s in enumerate(noisy_stars[:6])]).drop(columns="band")
    out = derive_light_curve_parameters(epochs, n_jobs=1)
    assert (out["period_bands"] == "G").all()
    for i, s in enumerate(noisy_stars[:6]):
        g = s["points"].query("band == 'G'")
        one = derive_star(g["time"].to_numpy(), g["mag"].to_numpy(), g["sigma"].to_numpy())
        row = out.iloc[i]
        assert row["fit_ok"] == one["fit_ok"]
        assert row["period"] == one["period"] or np.isnan(one["period"])


def test_derive_takes_the_period_from_all_bands_and_the_rest_from_g():
    star = simulate_bands(np.random.default_rng(11), noise=0.01)
    all_epochs = as_epochs(7, star["points"])
    g = all_epochs[all_epochs["band"] == "G"].drop(columns="band")
    out = derive_light_curve_parameters(g, bands=all_epochs[all_epochs["band"] != "G"],
                                        n_jobs=1).iloc[0]
    alone = derive_light_curve_parameters(g, n_jobs=1).iloc[0]
    assert out["fit_ok"] and out["period_bands"] == "G+BP+RP"
    assert right(out["period"], star["period"])
    assert out["n_epochs_g"] == len(g)  # the fit is G's: BP's 1.5x amplitude stays out
    assert out["amplitude_g"] == pytest.approx(alone["amplitude_g"], rel=0.05)
    with pytest.raises(ValueError, match="band"):
        derive_light_curve_parameters(g, bands=g)  # no band column


def test_long_form_band_column_splits_g_from_bp_rp():
    star = simulate_bands(np.random.default_rng(3), noise=0.02)["points"]
    frame = star.rename(columns={"sigma": "mag_error"}).assign(source_id=5)
    frame["band"] = frame["band"].map({"G": None, "BP": "bp", "RP": " Rp "})
    req = read_request(frame)
    g_only = read_request(frame[frame["band"].isna()].drop(columns="band"))
    pd.testing.assert_frame_equal(req.epochs, g_only.epochs)
    pd.testing.assert_frame_equal(req.stars, g_only.stars)
    assert g_only.bands is None
    n = int((star["band"] == "G").sum())
    assert req.bands["band"].value_counts().to_dict() == {"BP": n, "RP": n}
    assert list(req.bands.columns) == ["source_id", "time", "mag", "mag_error", "rejected",
                                       "band"]
    with pytest.raises(RequestError, match="unknown band"):
        read_request(frame.assign(band="V"))
    folded = frame.rename(columns={"time": "phase"}).assign(band="BP")
    with pytest.raises(RequestError, match="BP/RP rows"):
        read_request(folded)


def test_archive_layouts_keep_bp_and_rp_rows():
    from rrlfeh.data import layouts

    ind = pd.concat([layouts.read_table(p) for p in sorted(GAIA.glob("EPOCH_*.xml"))],
                    ignore_index=True)
    long = read_epoch_frame(ind)
    counts = ind["band"].astype(str).str.strip().value_counts().to_dict()
    assert long["band"].value_counts().to_dict() == counts  # G, BP, RP: 10 each
    req = read_request(long)
    assert len(req.epochs) == counts["G"] and len(req.bands) == counts["BP"] + counts["RP"]
    assert req.bands["source_id"].nunique() == 3 and req.bands["mag_error"].notna().any()

    raw = pd.read_csv(GAIA / "raw_epochs.csv")
    assert set(read_epoch_frame(raw)["band"]) == {"G"}  # this extract has no BP/RP fluxes
    for band, zp in (("bp", 25.3385), ("rp", 24.7479)):
        flux = 10 ** (-0.4 * (raw[f"{band}_mag"] - zp))
        raw[f"{band}_flux"], raw[f"{band}_flux_error"] = flux, 0.01 * flux
    req = read_request(read_epoch_frame(raw))
    assert len(req.epochs) == len(raw)
    assert req.bands["band"].value_counts().to_dict() == {"BP": len(raw), "RP": len(raw)}
    # the transit without photometry stays flagged in every band
    assert req.bands["rejected"].sum() == 2 * raw["rejected_by_photometry"].sum()


def test_score_request_derives_periods_from_all_bands(noisy_stars):
    """A star whose G alone gives a wrong period is given the right one when its BP/RP rows
    are sent along (ScoringModel without ensembles: derivation and status only)."""
    model = ScoringModel({}, {"derive": {}, "domain": {}})
    pick = None
    for star in noisy_stars:
        t, mag, sigma, band = arrays(star["points"])
        g = band == "G"
        d_g = derive_star(t[g], mag[g], sigma[g])
        d_j = derive_star(t[g], mag[g], sigma[g], other_bands=(t[~g], mag[~g], sigma[~g],
                                                               band[~g]))
        if d_j["fit_ok"] and right(d_j["period"], star["period"]) and not (
                d_g["fit_ok"] and right(d_g["period"], star["period"])):
            pick = star
            break
    assert pick is not None
    frame = pick["points"].rename(columns={"sigma": "mag_error"}).assign(source_id=42)
    joint = score_request(read_request(frame), model).iloc[0]
    alone = score_request(read_request(frame[frame["band"] == "G"]), model).iloc[0]
    assert joint["period_derived"] and right(joint["period"], pick["period"])
    assert not (alone["period_derived"] and right(alone["period"], pick["period"]))
    assert joint["n_epochs"] == (frame["band"] == "G").sum()  # the curve is G's alone


def test_model_signature_names_the_band_column():
    from rrlfeh.serving.pyfunc import signature

    assert "band" in signature().inputs.input_names()
