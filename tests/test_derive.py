"""derive_light_curve_parameters returns every star: parameters for good curves, NaNs and a
reason for bad ones."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
from test_period import fourier_model, gaia_times, simulate_gaia

from rrlfeh.data import schema
from rrlfeh.lightcurve.derive import derive_light_curve_parameters


def epochs_of(source_id: int, lc: dict) -> pd.DataFrame:
    """A canonical epochs table for one simulated curve."""
    n = len(lc["t"])
    return pd.DataFrame({"source_id": source_id, "transit_id": np.arange(n) + source_id * 1000,
                         "time": lc["t"], "mag": lc["mag"], "flux": lc["flux"],
                         "flux_error": lc["flux_error"], "rejected": np.zeros(n, bool)})


@pytest.fixture(scope="module")
def mixed_epochs() -> pd.DataFrame:
    """Three good stars and four bad ones, in a shuffled row order."""
    rng = np.random.default_rng(42)
    parts = [
        epochs_of(11, simulate_gaia(rng, period=0.5731, n_epochs=60, a1=0.35)),
        epochs_of(12, simulate_gaia(rng, period=0.3187, n_epochs=45, a1=0.2, rrc=True)),
        epochs_of(13, simulate_gaia(rng, period=0.7012, n_epochs=30, a1=0.25)),
    ]
    few = epochs_of(21, simulate_gaia(rng, period=0.6, n_epochs=20))
    few.loc[7:, "rejected"] = True                       # 7 clean epochs left
    holes = epochs_of(22, simulate_gaia(rng, period=0.6, n_epochs=14))
    holes.loc[:3, "mag"] = np.nan                        # 10 finite
    holes.loc[4, "flux_error"] = np.inf                  # 9 finite
    t = gaia_times(rng, 40)
    noise = epochs_of(23, dict(t=t, mag=16 + rng.normal(0, 0.01, 40),
                               flux=np.full(40, 1e4), flux_error=np.full(40, 92.1)))
    gone = epochs_of(24, simulate_gaia(rng, period=0.6, n_epochs=15))
    gone["rejected"] = True
    frame = pd.concat([parts[0], few, parts[1], holes, noise, parts[2], gone])
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def derived(mixed_epochs: pd.DataFrame) -> pd.DataFrame:
    return derive_light_curve_parameters(mixed_epochs, n_jobs=1)


def test_every_star_returned_once_in_input_order(mixed_epochs: pd.DataFrame,
                                                 derived: pd.DataFrame) -> None:
    assert derived["source_id"].tolist() == pd.unique(mixed_epochs["source_id"]).tolist()
    assert len(derived) == 7
    assert str(derived["type"].dtype) == "string" and derived["fit_ok"].dtype == bool


def test_good_stars(derived: pd.DataFrame) -> None:
    good = derived.set_index("source_id").loc[[11, 12, 13]]
    assert good["fit_ok"].all() and (good["fit_reason"] == "").all()
    assert good["period"].to_numpy() == pytest.approx([0.5731, 0.3187, 0.7012], rel=1e-4)
    assert good["type"].tolist() == ["RRab", "RRc", "RRab"]
    assert good["n_epochs_g"].tolist() == [60, 45, 30]
    assert good[["epoch_max", "amplitude_g", "mean_mag_g", "phi31_g", "phi31_g_error",
                 "r21_g"]].notna().all().all()
    assert good["mean_mag_g"].to_numpy() == pytest.approx(16.0, abs=0.1)


def test_bad_stars_have_reasons_and_nans(derived: pd.DataFrame) -> None:
    bad = derived.set_index("source_id").loc[[21, 22, 23, 24]]
    assert not bad["fit_ok"].any()
    assert bad.loc[21, "fit_reason"] == "too few clean G epochs (7 < 12)"
    assert bad.loc[22, "fit_reason"] == "too few clean G epochs (9 < 12)"
    assert bad.loc[23, "fit_reason"].startswith("no significant period in 0.2-1 d")
    assert bad.loc[24, "fit_reason"] == "too few clean G epochs (0 < 12)"
    assert bad[["period", "epoch_max", "amplitude_g", "phi31_g"]].isna().all().all()
    assert (bad["type"] == "").all()
    assert bad["n_epochs_g"].tolist() == [7, 9, 40, 0]
    assert (derived["n_clipped"] >= 0).all()


def test_parallel_matches_serial(mixed_epochs: pd.DataFrame, derived: pd.DataFrame) -> None:
    par = derive_light_curve_parameters(mixed_epochs, n_jobs=2, chunk_size=2)
    pd.testing.assert_frame_equal(par, derived)


def _pid(_: int) -> int:
    time.sleep(0.05)  # long enough that every worker takes a task
    return os.getpid()


def _worker_pids(n: int) -> set[int]:
    """The pids of the kept pool of `n` workers."""
    from rrlfeh.lightcurve.derive import worker_pool

    return set(worker_pool(n).map(_pid, range(8)))


def test_parallel_runs_reuse_their_worker_processes_and_survive_a_killed_one(
        mixed_epochs: pd.DataFrame, derived: pd.DataFrame) -> None:
    """A second call runs in the same spawned workers (no imports again per call); a worker
    killed between calls costs a new pool, not the answer."""
    from rrlfeh.lightcurve.derive import drop_pool

    drop_pool(2)
    first = derive_light_curve_parameters(mixed_epochs, n_jobs=2, chunk_size=2)
    pids = _worker_pids(2)
    again = derive_light_curve_parameters(mixed_epochs, n_jobs=2, chunk_size=2)
    assert _worker_pids(2) == pids and len(pids) == 2 and os.getpid() not in pids
    pd.testing.assert_frame_equal(first, derived)
    pd.testing.assert_frame_equal(again, derived)
    killed = min(pids)
    os.kill(killed, signal.SIGKILL)
    time.sleep(0.5)
    after = derive_light_curve_parameters(mixed_epochs, n_jobs=2, chunk_size=2)
    pd.testing.assert_frame_equal(after, derived)
    assert killed not in _worker_pids(2)


def test_missing_column_and_empty_input(mixed_epochs: pd.DataFrame) -> None:
    with pytest.raises(schema.SchemaError, match="flux_error"):
        derive_light_curve_parameters(mixed_epochs.drop(columns="flux_error"))
    empty = derive_light_curve_parameters(mixed_epochs.iloc[:0])
    assert len(empty) == 0 and "fit_reason" in empty.columns


def test_synthetic_periods_recovered() -> None:
    synthetic = pytest.importorskip("rrlfeh.data.synthetic")
    data = synthetic.generate(400, seed=7)
    clean = data.epochs[~data.epochs["rejected"]]
    counts = clean.groupby("source_id").size()
    ids = counts[counts >= 30].index[:300]
    assert len(ids) >= 200, "synthetic set has too few stars with >= 30 clean epochs"
    epochs = data.epochs[data.epochs["source_id"].isin(ids)]
    out = derive_light_curve_parameters(epochs, n_jobs=2).set_index("source_id")
    truth = data.truth.set_index("source_id").loc[ids]
    rel = (out.loc[ids, "period"] / truth["period"] - 1).abs()
    assert (rel < 1e-3).mean() >= 0.98, rel.sort_values().tail(10)


def test_outlier_is_clipped_and_counted() -> None:
    rng = np.random.default_rng(9)
    lc = simulate_gaia(rng, period=0.6123, n_epochs=50, a1=0.3, noise=0.004)
    lc["mag"][[5, 30]] += [1.1, -0.8]
    lc["flux"] = 10 ** (-0.4 * (lc["mag"] - 25.6874))
    out = derive_light_curve_parameters(epochs_of(1, lc), n_jobs=1).iloc[0]
    assert out["fit_ok"] and out["n_clipped"] == 2 and out["n_epochs_g"] == 50
    assert out["period"] == pytest.approx(0.6123, rel=1e-4)


def true_maximum(lc: dict) -> float:
    """The time of maximum light (least magnitude) of the simulated star's noiseless model, on a
    fine grid over one cycle."""
    t = lc["epoch"] + np.linspace(0.0, lc["period"], 20001)
    return float(t[np.argmin(fourier_model(t, lc["period"], lc["epoch"], lc["mean"],
                                           lc["amplitudes"], lc["phases"]))])


def test_a_given_period_is_fitted_at_not_searched() -> None:
    """A sparse, noisy curve whose own search finds no significant period still gets its epoch
    of maximum and type at the period a catalogue gives; a dense star gets the same values as
    its searched period gives; a given period does not lift the epoch count floor."""
    rng = np.random.default_rng(0)
    sparse = simulate_gaia(rng, period=0.5731, n_epochs=14, a1=0.3, noise=0.05)
    dense = simulate_gaia(rng, period=0.6342, n_epochs=60, a1=0.3)
    few = simulate_gaia(rng, period=0.55, n_epochs=8)
    epochs = pd.concat([epochs_of(1, sparse), epochs_of(2, dense), epochs_of(3, few)])
    searched = derive_light_curve_parameters(epochs, n_jobs=1).set_index("source_id")
    assert searched.loc[1, "fit_reason"].startswith("no significant period")
    assert searched.loc[2, "fit_ok"] and searched.loc[2, "period_bands"] == "G"
    given = derive_light_curve_parameters(
        epochs, n_jobs=1, periods={1: 0.5731, 2: float(searched.loc[2, "period"]), 3: 0.55}
    ).set_index("source_id")
    one = given.loc[1]
    assert one["fit_ok"] and one["period"] == 0.5731 and one["period_bands"] == "given"
    assert one["type"] == "RRab" and one["n_epochs_g"] == 14
    offset = ((one["epoch_max"] - true_maximum(sparse)) / 0.5731 + 0.5) % 1.0 - 0.5
    assert abs(offset) < 0.1
    two = given.loc[2]
    assert two["period_bands"] == "given" and two["type"] == searched.loc[2, "type"]
    for col in ("epoch_max", "amplitude_g", "phi31_g", "r21_g"):
        assert two[col] == pytest.approx(searched.loc[2, col], rel=1e-9, abs=1e-9)
    assert abs((two["epoch_max"] - true_maximum(dense)) / 0.6342 % 1.0 - 0.5) > 0.49
    assert given.loc[3, "fit_reason"] == "too few clean G epochs (8 < 12)"
