"""Speed, fidelity and memory of the vectorised preprocessing against the paper's per-star loop.

On the real Gaia DR3 G curves (shared data, 9,999 stars) with periods/epochs from
rrlfeh.lightcurve.derive (cached in benchmarks/.cache/, excluded from the timing), and on the
13,323 pre-folded DG22 curves. The per-star loop (fold, scipy make_smoothing_spline with GCV,
resample, standardise, one star at a time) runs on a subset. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/preprocess.py [--loop-stars 300] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.interpolate import make_smoothing_spline

from rrlfeh.data import schema
from rrlfeh.data.dg22 import read_dg22_curves
from rrlfeh.data.layouts import read_epoch_photometry
from rrlfeh.preprocess import preprocess_folded, preprocess_light_curves

CACHE = Path(__file__).parent / ".cache"
N_POINTS = 264


def load_gaia_epochs(data: Path) -> pd.DataFrame:
    """Clean G epochs of the real file in the epochs schema (rejected rows left out), read as
    the pipeline reads them."""
    epochs = read_epoch_photometry(data / "gaia_dr3" / "epoch_photometry.parquet")
    return epochs.loc[~epochs["rejected"]].reset_index(drop=True)


def load_periods(epochs: pd.DataFrame) -> pd.DataFrame:
    """derive_light_curve_parameters on the real epochs, cached (the period search is slow)."""
    path = CACHE / "gaia_dr3_derived.parquet"
    if path.exists():
        return pd.read_parquet(path)
    from rrlfeh.lightcurve.derive import derive_light_curve_parameters
    t0 = time.perf_counter()
    derived = derive_light_curve_parameters(epochs, n_jobs=2)
    print(f"derived periods for {len(derived)} stars in {time.perf_counter() - t0:.0f} s "
          f"(cached to {path})")
    CACHE.mkdir(exist_ok=True)
    derived.to_parquet(path)
    return derived


def per_star_loop(sid, x, mag, *, time_path: bool, period=None, epoch=None):
    """The paper's approach, one star at a time: fold, make_smoothing_spline (GCV), resample on
    the same grid, standardise. Returns (ids, smooth curves (mag), residual RMS)."""
    grid = np.arange(N_POINTS) / N_POINTS
    ids, curves, rms = [], [], []
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1], True])
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
        ph = np.mod((x[a:b] - epoch[i]) / period[i], 1.0) if time_path else np.mod(x[a:b], 1.0)
        order = np.argsort(ph, kind="stable")
        ph, m = ph[order], mag[a:b][order]
        keep = np.r_[True, np.diff(ph) > 0]          # make_smoothing_spline needs x increasing
        ph, m = ph[keep], m[keep]
        try:
            spl = make_smoothing_spline(ph, m)
        except Exception:                              # noqa: BLE001 - count, do not crash
            continue
        smooth = spl(grid)
        _ = (smooth - smooth.mean()) / smooth.std()    # standardised curve (timed, as the paper)
        ids.append(sid[a])
        curves.append(smooth)
        rms.append(np.sqrt(np.mean((m - spl(ph)) ** 2)))
    return np.array(ids), np.array(curves), np.array(rms)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def report_fidelity(name, vec, loop_ids, loop_curves, loop_rms) -> None:
    """Residual RMS of both on the stars both kept, and RMS difference of their smooth curves."""
    pos = pd.Index(vec.source_id).get_indexer(loop_ids)
    both = pos >= 0
    vec_smooth = vec.curves[pos[both]] * vec.std_mag[pos[both], None] + vec.mean_mag[pos[both],
                                                                                   None]
    diff = np.sqrt(np.mean((vec_smooth - loop_curves[both]) ** 2, axis=1))
    diff_std = np.sqrt(np.mean((vec.curves[pos[both]] - (loop_curves[both] - loop_curves[
        both].mean(1, keepdims=True)) / loop_curves[both].std(1, keepdims=True)) ** 2, axis=1))
    pr = lambda a: f"median {np.median(a):.4f}, p90 {np.percentile(a, 90):.4f}"  # noqa: E731
    print(f"  [{name}] {both.sum()} stars kept by both")
    print(f"    residual RMS to the data (mag): vectorised {pr(vec.resid_rms[pos[both]])}")
    print(f"                                     per-star  {pr(loop_rms[both])}")
    print(f"    RMS difference of the two smooth curves (mag): {pr(diff)}")
    print(f"    RMS difference of the standardised curves:    {pr(diff_std)}")


def heldout_fidelity(name, sid, x, m, phase, loop_ids, *, fit_vectorised, fit_loop,
                     fraction: float = 0.2, seed: int = 0) -> None:
    """Hold out `fraction` of each loop star's epochs at random, fit both methods on the rest,
    and compare the RMS of their prediction at the held-out phases (read off the resampled
    smooth curve by periodic interpolation): the fair accuracy test, as a closer fit to the
    points it was fitted on can also mean overfitting."""
    grid = np.arange(N_POINTS) / N_POINTS
    sel = np.isin(sid, loop_ids)
    hold = sel & (np.random.default_rng(seed).random(sid.size) < fraction)
    train = sel & ~hold
    vec, _ = fit_vectorised(train)
    l_ids, l_curves, _ = fit_loop(train)
    pos = pd.Index(vec.source_id).get_indexer(l_ids)
    both = pos >= 0
    vec_smooth = vec.curves[pos[both]] * vec.std_mag[pos[both], None] + vec.mean_mag[pos[both],
                                                                                   None]
    errs = {"vectorised": [], "per-star": []}
    for s, cv, cl in zip(l_ids[both], vec_smooth, l_curves[both], strict=True):
        k = hold & (sid == s)
        if not k.any():
            continue
        errs["vectorised"].append(np.sqrt(np.mean(
            (np.interp(phase[k], grid, cv, period=1.0) - m[k]) ** 2)))
        errs["per-star"].append(np.sqrt(np.mean(
            (np.interp(phase[k], grid, cl, period=1.0) - m[k]) ** 2)))
    print(f"  [{name}] held-out {fraction:.0%} of epochs, {len(errs['per-star'])} stars fitted "
          "by both (and with held-out epochs): prediction RMS at held-out epochs (mag)")
    for key, val in errs.items():
        print(f"    {key:10s} median {np.median(val):.4f}, p90 {np.percentile(val, 90):.4f}, "
              f"mean {np.mean(val):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RRLFEH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--loop-stars", type=int, default=300)
    args = parser.parse_args()

    epochs = load_gaia_epochs(args.data)
    derived = load_periods(epochs)
    stars = derived.loc[derived["fit_ok"]]
    print(f"Gaia DR3: {epochs['source_id'].nunique()} stars, {len(epochs)} clean G epochs; "
          f"{len(stars)} with a derived period (fit_ok)")
    epochs = epochs.loc[epochs["source_id"].isin(stars["source_id"])]
    epochs = epochs.sort_values(["source_id", "time"], kind="stable")
    stars = stars.set_index("source_id").loc[np.unique(epochs["source_id"])].reset_index()
    sid = epochs["source_id"].to_numpy(np.int64)
    t = epochs["time"].to_numpy(float)
    m = epochs["mag"].to_numpy(float)
    err = schema.mag_error(epochs)
    period, epoch = stars["period"].to_numpy(float), stars["epoch_max"].to_numpy(float)

    preprocess_light_curves(sid[:2000], t[:2000], m[:2000], period, epoch, star_id=stars[
        "source_id"].to_numpy())                       # warm-up (imports, caches)
    tracemalloc.start()
    (vec, rej), dt = timed(preprocess_light_curves, sid, t, m, period, epoch, n_points=N_POINTS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (vec_w, rej_w), dt_w = timed(preprocess_light_curves, sid, t, m, period, epoch,
                                 mag_error=err, n_points=N_POINTS)
    (_, _), dt_2 = timed(preprocess_light_curves, sid, t, m, period, epoch, n_points=N_POINTS,
                         n_threads=2)
    (vec_g, _), dt_g = timed(preprocess_light_curves, sid, t, m, period, epoch,
                             n_points=N_POINTS, criterion="gcv")
    n = len(stars)
    print(f"\nvectorised, {n} stars: {dt:.2f} s = {n / dt:,.0f} curves/s "
          f"({len(vec)} kept, {len(rej)} rejected); tracemalloc peak {peak / 2**20:.0f} MiB")
    print(f"  n_threads=2:            {dt_2:.2f} s = {n / dt_2:,.0f} curves/s")
    print(f"  with mag_error weights: {dt_w:.2f} s = {n / dt_w:,.0f} curves/s")
    print(f"  GCV instead of REML:    {dt_g:.2f} s = {n / dt_g:,.0f} curves/s")
    print("  rejections: " + "; ".join(f"{k} {v}" for k, v in rej["reason"].str.extract(
        r"^([a-z ]+)")[0].str.strip().value_counts().items()))

    keep_ids = np.unique(sid)[: args.loop_stars]
    sel = np.isin(sid, keep_ids)
    (loop_ids, loop_curves, loop_rms), dt_loop = timed(
        per_star_loop, sid[sel], t[sel], m[sel], time_path=True, period=period[:keep_ids.size],
        epoch=epoch[:keep_ids.size])
    print(f"per-star loop (make_smoothing_spline), first {keep_ids.size} stars: {dt_loop:.2f} s "
          f"= {keep_ids.size / dt_loop:,.1f} curves/s ({len(loop_ids)} fitted)")
    print(f"speed-up: {(n / dt) / (keep_ids.size / dt_loop):,.0f}x")
    print("fidelity on the loop's stars:")
    report_fidelity("REML, unweighted (default)", vec, loop_ids, loop_curves, loop_rms)
    report_fidelity("REML, mag_error weights", vec_w, loop_ids, loop_curves, loop_rms)
    report_fidelity("GCV, unweighted", vec_g, loop_ids, loop_curves, loop_rms)
    star_of = np.searchsorted(np.unique(sid), sid)
    phase = np.mod((t - epoch[star_of]) / period[star_of], 1.0)
    heldout_fidelity(
        "Gaia DR3", sid, t, m, phase, keep_ids,
        fit_vectorised=lambda k: preprocess_light_curves(sid[k], t[k], m[k], period, epoch,
                                                         star_id=np.unique(sid)),
        fit_loop=lambda k: per_star_loop(sid[k], t[k], m[k], time_path=True,
                                         period=period[:keep_ids.size],
                                         epoch=epoch[:keep_ids.size]))

    # one star at a time through the vectorised path (the serving case)
    one = [(sid == s) for s in keep_ids[:100]]
    _, dt_one = timed(lambda: [preprocess_light_curves(sid[k], t[k], m[k], period[i:i + 1],
                                                       epoch[i:i + 1]) for i, k in enumerate(one)])
    print(f"vectorised path called once per star (100 calls): {100 / dt_one:,.0f} curves/s")

    dg = read_dg22_curves(args.data / "dg22" / "lc_dev_g.tar.gz")
    dsid = dg["source_id"].to_numpy(np.int64)
    (dvec, drej), ddt = timed(preprocess_folded, dsid, dg["phase"].to_numpy(),
                              dg["mag"].to_numpy(), n_points=N_POINTS, align_max=True)
    nd = np.unique(dsid).size
    print(f"\nDG22 pre-folded, {nd} stars: {ddt:.2f} s = {nd / ddt:,.0f} curves/s "
          f"({len(dvec)} kept, {len(drej)} rejected: "
          f"{drej['reason'].str.startswith('phase gap').sum()} for a phase gap > 0.25)")
    first = np.unique(dsid)[: args.loop_stars]
    dsel = np.isin(dsid, first)
    order = np.argsort(dsid[dsel], kind="stable")
    (l_ids, l_curves, l_rms), dl = timed(per_star_loop, dsid[dsel][order],
                                         dg["phase"].to_numpy()[dsel][order],
                                         dg["mag"].to_numpy()[dsel][order], time_path=False)
    print(f"per-star loop on {first.size} DG22 stars: {first.size / dl:,.1f} curves/s")
    (dplain, _), _ = timed(preprocess_folded, dsid, dg["phase"].to_numpy(), dg["mag"].to_numpy(),
                           n_points=N_POINTS)
    report_fidelity("DG22, REML, not aligned", dplain, l_ids, l_curves, l_rms)
    dsid_s, dph_s, dm_s = dsid[dsel][order], dg["phase"].to_numpy()[dsel][order], \
        dg["mag"].to_numpy()[dsel][order]
    heldout_fidelity(
        "DG22", dsid_s, dph_s, dm_s, dph_s, first,
        fit_vectorised=lambda k: preprocess_folded(dsid_s[k], dph_s[k], dm_s[k]),
        fit_loop=lambda k: per_star_loop(dsid_s[k], dph_s[k], dm_s[k], time_path=False))
    print(f"\npeak RSS of the whole run (ru_maxrss): {peak_rss_mb():,.0f} MiB")


if __name__ == "__main__":
    main()
