"""Public preprocessing: standardised curves out, every bad star rejected with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rrlfeh.data.dg22 import read_dg22_curves
from rrlfeh.preprocess import (
    ProcessedCurves,
    preprocess_folded,
    preprocess_light_curves,
    preprocess_tables,
)

FIXTURE = Path(__file__).parent / "data" / "dg22"


def template(phase: np.ndarray) -> np.ndarray:
    """RRab-like G light curve: slow decline, steep rise round phase 0 (4-harmonic sawtooth)."""
    k = np.arange(1, 5)[:, None]
    return 16.0 - 0.8 / np.pi * np.sum(np.sin(2 * np.pi * k * phase) / k, axis=0)


def make_batch(n_stars: int, n_epochs: int = 60, sigma: float = 0.01, seed: int = 0):
    """Gaia-like flat arrays: per-epoch source_id/time/mag/error, per-star period/epoch_max."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n_stars, dtype=np.int64) + 5_000_000
    period = rng.uniform(0.45, 0.8, n_stars)
    epoch = rng.uniform(1000, 1100, n_stars)
    sid = np.repeat(ids, n_epochs)
    time = rng.uniform(1700, 2700, sid.size)
    star = np.repeat(np.arange(n_stars), n_epochs)
    phase = np.mod((time - epoch[star]) / period[star], 1.0)
    mag = template(phase) + rng.normal(0.0, sigma, sid.size)
    return sid, time, mag, np.full(sid.size, sigma), ids, period, epoch


def test_good_batch_outputs():
    sid, time, mag, err, ids, period, epoch = make_batch(40)
    out, rejected = preprocess_light_curves(sid, time, mag, period, epoch, mag_error=err,
                                            n_points=100)
    assert rejected.empty and list(rejected.columns) == ["source_id", "reason"]
    assert isinstance(out, ProcessedCurves) and len(out) == 40
    assert out.source_id.tolist() == ids.tolist()
    assert out.curves.shape == (40, 100) and out.curves.dtype == np.float32
    np.testing.assert_allclose(out.curves.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.curves.std(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.phase_grid, np.arange(100) / 100)
    np.testing.assert_allclose(out.time_in_cycle, out.phase_grid * period[:, None], rtol=1e-6)
    truth = template(out.phase_grid)
    np.testing.assert_allclose(out.amplitude, np.ptp(truth), atol=0.03)
    np.testing.assert_allclose(out.mean_mag, truth.mean(), atol=0.005)
    assert np.all(np.abs(np.argmin(out.curves, axis=1) - np.argmin(truth)) <= 2)  # max light
    assert np.all((out.resid_rms > 0.005) & (out.resid_rms < 0.012))
    assert np.all((out.edf > 4) & (out.edf < 30)) and np.all(out.n_epochs == 60)
    assert set(out.to_frame().columns) >= {"source_id", "period", "amplitude", "edf", "gcv"}


def test_corrupted_stars_rejected_good_ones_survive():
    sid, time, mag, err, ids, period, epoch = make_batch(8, seed=1)
    rows = {i: np.flatnonzero(sid == ids[i]) for i in range(8)}
    mag[rows[1][::2]] = np.nan                          # half the mags NaN
    time[rows[2][7]] = time[rows[2][3]]                 # a duplicated time
    keep = np.ones(sid.size, bool)
    keep[rows[3][3:]] = False                           # only 3 points
    period[4] = 0.0                                     # zero period
    ph = np.mod((time[rows[5]] - epoch[5]) / period[5], 1.0)
    time[rows[5]] -= np.where(ph >= 0.5, 0.5, 0.0) * period[5]   # every phase in [0, 0.5)
    mag[rows[6][0]] = np.inf                            # one bad epoch: dropped, star kept
    extra_sid = np.full(20, 123)                        # epochs of a star not in star_id
    star_id = np.r_[ids, 777]                           # a star with no epochs
    out, rejected = preprocess_light_curves(
        np.r_[sid[keep], extra_sid], np.r_[time[keep], np.arange(20.0)],
        np.r_[mag[keep], np.full(20, 15.0)], np.r_[period, 0.5], np.r_[epoch, 0.0],
        star_id=star_id, mag_error=np.r_[err[keep], np.full(20, 0.01)])
    assert out.source_id.tolist() == [ids[0], ids[6], ids[7]]
    assert out.n_dropped.tolist() == [0, 1, 0] and out.n_epochs.tolist() == [60, 59, 60]
    why = dict(zip(rejected["source_id"], rejected["reason"], strict=True))
    assert set(why) == {ids[1], ids[2], ids[3], ids[4], ids[5], 777, 123}
    assert "30 of 60 epochs unusable (non-finite time/mag" in why[ids[1]]
    assert "duplicated times" in why[ids[2]]
    assert "too few points: 3 usable < 12" in why[ids[3]]
    assert "invalid period 0" in why[ids[4]]
    assert "phase gap" in why[ids[5]] and "> 0.25" in why[ids[5]]
    assert why[777] == "no epochs"
    assert "not in star_id" in why[123]


def test_flat_curve_rejected():
    sid, time, mag, err, ids, period, epoch = make_batch(3, seed=3)
    mag[sid == ids[1]] = 15.0
    out, rejected = preprocess_light_curves(sid, time, mag, period, epoch)
    assert out.source_id.tolist() == [ids[0], ids[2]]
    assert rejected["source_id"].tolist() == [ids[1]]
    assert rejected["reason"].iloc[0].startswith("flat smooth curve")


def test_star_alone_equals_star_in_batch():
    sid, time, mag, err, ids, period, epoch = make_batch(300, seed=2)
    batch, _ = preprocess_light_curves(sid, time, mag, period, epoch, mag_error=err, chunk_size=50)
    i = 231
    sel = sid == ids[i]
    alone, _ = preprocess_light_curves(sid[sel], time[sel], mag[sel], period[i:i + 1],
                                       epoch[i:i + 1], mag_error=err[sel])
    np.testing.assert_allclose(batch.curves[i], alone.curves[0], atol=1e-5)
    np.testing.assert_allclose(batch.edf[i], alone.edf[0], rtol=1e-8)


def test_input_order_does_not_matter():
    sid, time, mag, err, ids, period, epoch = make_batch(20, seed=4)
    perm = np.random.default_rng(0).permutation(sid.size)
    a, _ = preprocess_light_curves(sid, time, mag, period, epoch)
    b, _ = preprocess_light_curves(sid[perm], time[perm], mag[perm], period, epoch)
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-6)


def test_all_rejected_and_empty_inputs_do_not_crash():
    out, rejected = preprocess_light_curves(np.array([1, 1]), np.array([0.0, 0.3]),
                                            np.array([15.0, 15.2]), np.array([0.5]),
                                            np.array([0.0]), n_points=50)
    assert len(out) == 0 and out.curves.shape == (0, 50)
    assert rejected["source_id"].tolist() == [1]
    out, rejected = preprocess_folded(np.array([], dtype=np.int64), np.array([]), np.array([]))
    assert len(out) == 0 and rejected.empty


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="equal lengths"):
        preprocess_light_curves(np.array([1, 1]), np.array([0.0]), np.array([1.0, 2.0]),
                                np.array([0.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="period has 2 entries but there are 1 stars"):
        preprocess_light_curves(np.array([1]), np.array([0.0]), np.array([1.0]),
                                np.array([0.5, 0.6]), np.array([0.0]))


def test_folded_matches_time_path():
    sid, time, mag, err, ids, period, epoch = make_batch(10, seed=6)
    star = np.repeat(np.arange(10), 60)
    phase = np.mod((time - epoch[star]) / period[star], 1.0)
    a, _ = preprocess_light_curves(sid, time, mag, period, epoch)
    b, _ = preprocess_folded(sid, phase, mag, period=period)
    np.testing.assert_allclose(a.curves, b.curves, atol=1e-5)
    np.testing.assert_allclose(a.time_in_cycle, b.time_in_cycle)
    c, _ = preprocess_folded(sid, phase, mag)
    assert np.isnan(c.time_in_cycle).all() and np.isnan(c.period).all()


def test_folded_align_max_on_dg22_fixture():
    df = read_dg22_curves(FIXTURE / "lc_dev_g.tar.gz")
    plain, rej = preprocess_folded(df["source_id"], df["phase"], df["mag"], min_points=12,
                                   max_phase_gap=0.4)
    assert rej.empty and len(plain) == 3
    assert np.all(np.abs(plain.phase_grid[np.argmin(plain.curves, axis=1)] - 0.65) < 0.05)
    aligned, _ = preprocess_folded(df["source_id"], df["phase"], df["mag"], max_phase_gap=0.4,
                                   align_max=True)
    assert np.all(np.abs(aligned.phase_shift - 0.65) < 0.05)
    assert np.all(np.argmin(aligned.curves, axis=1) <= 1)
    np.testing.assert_allclose(aligned.amplitude, plain.amplitude, rtol=0.02)


def test_preprocess_tables_drops_flagged_epochs_and_uses_errors():
    sid, time, mag, err, ids, period, epoch = make_batch(3, seed=8)
    flux = 10 ** (-0.4 * (mag - 25.7))
    epochs = pd.DataFrame({"source_id": sid, "transit_id": np.arange(sid.size), "time": time,
                           "mag": mag, "flux": flux, "flux_error": flux * err / 1.0857,
                           "rejected": np.zeros(sid.size, bool)})
    epochs.loc[epochs.index[:50], "rejected"] = True     # star 0 keeps only 10 epochs
    epochs.loc[epochs.index[60], "mag"] = 99.0           # flagged outlier of star 1 ...
    epochs.loc[epochs.index[60], "rejected"] = True      # ... is left out
    stars = pd.DataFrame({"source_id": ids, "period": period, "epoch_max": epoch})
    out, rejected = preprocess_tables(epochs, stars, use_mag_error=True, n_points=64)
    plain, _ = preprocess_tables(epochs, stars, n_points=64)
    np.testing.assert_allclose(plain.curves, out.curves, atol=1e-5)   # equal errors: same fit
    assert rejected["source_id"].tolist() == [ids[0]]
    assert "too few points: 10" in rejected["reason"].iloc[0]
    assert out.source_id.tolist() == [ids[1], ids[2]] and out.n_epochs.tolist() == [59, 60]
    assert np.all(out.amplitude < 1.0)


@pytest.mark.realdata
def test_real_dg22_sample(shared_data):
    df = read_dg22_curves(shared_data / "dg22" / "lc_dev_g.tar.gz", max_stars=300)
    out, rejected = preprocess_folded(df["source_id"], df["phase"], df["mag"], align_max=True)
    assert len(out) + len(rejected) == 300 and len(out) > 240
    assert np.isfinite(out.curves).all() and np.median(out.resid_rms) < 0.03


def test_unflagged_outlier_is_clipped_not_fitted():
    """A single wild epoch (as Gaia leaves some unflagged) must not bend the smooth curve."""
    sid, time, mag, err, ids, period, epoch = make_batch(3, seed=4)
    clean, _ = preprocess_light_curves(sid, time, mag, period, epoch, star_id=ids,
                                       mag_error=err)
    hit = np.flatnonzero(sid == ids[1])[10]
    mag = mag.copy()
    mag[hit] += 1.2
    robust, _ = preprocess_light_curves(sid, time, mag, period, epoch, star_id=ids,
                                        mag_error=err)
    naive, _ = preprocess_light_curves(sid, time, mag, period, epoch, star_id=ids,
                                       mag_error=err, clip_sigma=None)
    assert robust.n_clipped.tolist() == [0, 1, 0] and naive.n_clipped.tolist() == [0, 0, 0]
    assert np.abs(robust.curves[1] - clean.curves[1]).max() < 0.05
    assert np.abs(naive.curves[1] - clean.curves[1]).max() > 0.2
    assert np.array_equal(robust.curves[[0, 2]], clean.curves[[0, 2]])


def test_absurd_magnitudes_are_unusable_like_nan():
    sid, time, mag, err, ids, period, epoch = make_batch(2, seed=3)
    first = np.flatnonzero(sid == ids[0])
    absurd, missing = mag.copy(), mag.copy()
    absurd[first[[4, 9]]] = [1e30, -99.0]     # corrupt values, fill-ins
    missing[first[[4, 9]]] = np.nan
    a, _ = preprocess_light_curves(sid, time, absurd, period, epoch, star_id=ids, mag_error=err)
    b, _ = preprocess_light_curves(sid, time, missing, period, epoch, star_id=ids, mag_error=err)
    assert a.n_dropped.tolist() == [2, 0] == b.n_dropped.tolist()
    np.testing.assert_array_equal(a.curves, b.curves)
