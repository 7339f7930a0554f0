"""Periods of sparse curves: G alone against the joint G+BP+RP search, on real Gaia DR3 stars.

Stars with >= 50 clean G epochs get a reference period from their full G curve (`derive_star`,
G only, as the pipeline derives it). For N = 15, 20, 25, 30 random transits of each (seeded
draws among the transits with any clean epoch, each keeping its clean G, BP and RP epochs:
about 2 % of the transits have BP/RP but no clean G), the period is derived again from G alone
and from G+BP+RP (`derive_star(other_bands=...)`); a subset without a significant period counts
as a miss. Prints per N and search: the share within
0.1 % of the reference, at a half/double period, at a 1-day alias (|1/P - 1/P_ref| = 1 or 2 c/d),
at a Gaia scanning-law alias (`rrlfeh.lightcurve.agreement`), elsewhere, without a period, and
subsets per second per core.

Run: .venv/bin/python benchmarks/period_sparse_bands.py [--data-dir ../shared/data]
     [--stars 200] [--draws 3] [--n-jobs 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe_machine

from rrlfeh.data import schema
from rrlfeh.data.layouts import read_table, to_epochs
from rrlfeh.lightcurve.agreement import relation
from rrlfeh.lightcurve.derive import clean_mask, derive_star

REPO = Path(__file__).resolve().parents[1]
SIZES = (15, 20, 25, 30)
TOLERANCE = 1e-3
OUTCOMES = ("agree", "half/double", "1-day alias", "scan alias", "other", "no period")
COLUMNS = ["source_id", "transit_id", "time", "mag", "sigma", "band"]


def clean_bands(raw: pd.DataFrame) -> pd.DataFrame:
    """Clean G, BP and RP epochs (Gaia's flags, finite positive fluxes) with their sigma."""
    frames = []
    for band in ("G", "BP", "RP"):
        e = to_epochs(raw, band=band)
        e = e.loc[clean_mask(e)].copy()
        e["sigma"] = schema.mag_error(e)
        frames.append(e.assign(band=band)[COLUMNS])
    return pd.concat(frames, ignore_index=True)


def outcome(p_ref: float, p: float) -> str:
    """How a subset's period relates to the reference (OUTCOMES)."""
    if not np.isfinite(p):
        return "no period"
    if abs(p / p_ref - 1) <= TOLERANCE:
        return "agree"
    if min(abs(p / (2 * p_ref) - 1), abs(2 * p / p_ref - 1)) <= TOLERANCE:
        return "half/double"
    df = abs(1 / p - 1 / p_ref)
    if any(abs(df - k) <= TOLERANCE / p_ref for k in (1, 2)):
        return "1-day alias"
    return "scan alias" if relation(p_ref, p, TOLERANCE).startswith("alias") else "other"


def period_of(result: dict) -> float:
    """The derived period, NaN where the fit was not accepted."""
    return float(result["period"]) if result["fit_ok"] else np.nan


def star_rows(args: tuple[int, pd.DataFrame, int, int]) -> list[dict]:
    """Reference period and every (N, draw) subset of one star, G-only and joint, timed."""
    sid, e, draws, seed = args
    g = e[e["band"] == "G"]
    ref = period_of(derive_star(g["time"].to_numpy(), g["mag"].to_numpy(), g["sigma"].to_numpy()))
    if not np.isfinite(ref):
        return []
    rng = np.random.default_rng([seed, sid % 2**32])
    transits = np.unique(e["transit_id"].to_numpy())
    rows = []
    for n in SIZES:
        for d in range(draws):
            chosen = rng.choice(transits, n, replace=False)
            sub = e[e["transit_id"].isin(chosen)]
            gs, bs = sub[sub["band"] == "G"], sub[sub["band"] != "G"]
            t, m, s = (gs[c].to_numpy() for c in ("time", "mag", "sigma"))
            other = tuple(bs[c].to_numpy() for c in ("time", "mag", "sigma", "band"))
            for method, kw in (("G", {}), ("G+BP+RP", {"other_bands": other})):
                start = time.process_time()
                p = period_of(derive_star(t, m, s, **kw))
                rows.append({"source_id": sid, "n": n, "draw": d, "method": method,
                             "outcome": outcome(ref, p), "cpu_s": time.process_time() - start})
    return rows


def worker(batch: list[tuple[int, pd.DataFrame, int, int]]) -> list[dict]:
    """One process: its stars one BLAS thread each (tiny matrices)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return [r for item in batch for r in star_rows(item)]


def main() -> None:
    """Parse arguments, draw the subsets, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--stars", type=int, default=200, help="random stars with >= 50 G epochs")
    ap.add_argument("--draws", type=int, default=3, help="random subsets per star and N")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(describe_machine())
    raw = read_table(args.data_dir / "gaia_dr3" / "epoch_photometry.parquet")
    epochs = clean_bands(raw)
    n_g = epochs[epochs["band"] == "G"].groupby("source_id").size()
    pool_ids = n_g[n_g >= 50].index.to_numpy()
    rng = np.random.default_rng(args.seed)
    ids = np.sort(rng.choice(pool_ids, min(args.stars, len(pool_ids)), replace=False))
    print(f"{len(pool_ids)} stars with >= 50 clean G epochs; {len(ids)} drawn, {args.draws} "
          f"subsets per star and N")
    by_star = dict(tuple(epochs[epochs["source_id"].isin(ids)].groupby("source_id")))
    items = [(int(s), by_star[s], args.draws, args.seed) for s in ids]
    batches = [items[i::4 * args.n_jobs] for i in range(4 * args.n_jobs)]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.n_jobs, mp_context=ctx) as pool:
        rows = pd.DataFrame([r for res in pool.map(worker, batches) for r in res])
    print(f"{rows['source_id'].nunique()} stars with a reference period; "
          f"{time.perf_counter() - start:.0f} s wall on {args.n_jobs} processes\n")
    print(f"{'N':>3} {'search':8}" + "".join(f"{o:>12}" for o in OUTCOMES) + f"{'subsets/s':>11}")
    for (n, method), grp in rows.groupby(["n", "method"]):
        shares = grp["outcome"].value_counts(normalize=True)
        print(f"{n:3d} {method:8}" + "".join(f"{shares.get(o, 0.0):12.1%}" for o in OUTCOMES)
              + f"{len(grp) / grp['cpu_s'].sum():11.1f}")
    wide = rows.pivot_table(index=["source_id", "n", "draw"], columns="method",
                            values="outcome", aggfunc="first")
    gain = ((wide["G+BP+RP"] == "agree") & (wide["G"] != "agree")).sum()
    loss = ((wide["G"] == "agree") & (wide["G+BP+RP"] != "agree")).sum()
    print(f"\nsubsets right only with G+BP+RP: {gain}; right only with G: {loss} "
          f"(of {len(wide)}); subsets/s is per core (process CPU time of derive_star)")


if __name__ == "__main__":
    main()
