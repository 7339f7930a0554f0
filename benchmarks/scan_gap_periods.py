"""Benchmark: periods of folded curves from Gaia's scan lags (rrlfeh.lightcurve.scan_gaps).

Run: .venv/bin/python benchmarks/scan_gap_periods.py [--data-dir ../shared/data] [--limit 2000]
     [--n-draws 3] [--seed 1]
1. Real Gaia DR3: --limit stars of gaia_dr3/epoch_photometry.parquet, their clean G epochs folded
   at the period this project derives from them (rrlfeh.lightcurve.derive), in full and cut to
   N = 15, 20, 25, 30, 40 random epochs (--n-draws draws): the share given a period (margin >=
   a threshold) and the share of those within 1 % of the folding period (the same peak; 1 % of
   P is ~0.03 dex of [Fe/H] through a P-phi31 line), for every threshold in MARGINS: the table
   params.yaml's min_z_margin was chosen from. No label is read.
2. DG22 (dg22/lc_dev_g.tar.gz, pre-folded, no periods): the share of the labelled stars given a
   period, in full and cut to N, and stars/s of the search.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rrlfeh.data.dg22 import read_dg22_curves, read_dg22_labels
from rrlfeh.data.layouts import read_table, to_epochs
from rrlfeh.lightcurve.derive import clean_mask, derive_light_curve_parameters
from rrlfeh.lightcurve.scan_gaps import ALIAS_WINDOW, knobs_for, scan_gap_periods

ROOT = Path(__file__).resolve().parents[1]
CUTS = (15, 20, 25, 30, 40)
MARGINS = (0.0, 1.0, 2.0, 3.0, 4.0)


def knobs() -> dict:
    """params.yaml's scan-gap knobs for RRab (both sets here are fundamental-mode stars)."""
    sg = yaml.safe_load((ROOT / "params.yaml").read_text())["preprocess"]["folded"]["scan_gaps"]
    return knobs_for(sg, "RRab")


def cut(phase: pd.DataFrame, n: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """Each star's rows, or n of them at random (stars with fewer than n + 5 dropped)."""
    if n is None:
        return phase
    parts = [g.iloc[rng.choice(len(g), n, replace=False)]
             for _, g in phase.groupby("source_id", sort=False) if len(g) >= n + 5]
    return pd.concat(parts) if parts else phase.iloc[:0]


def dr3(data_dir: Path, limit: int, n_draws: int, seed: int, kn: dict) -> None:
    raw = read_table(data_dir / "gaia_dr3" / "epoch_photometry.parquet")
    g = to_epochs(raw, band="G").reset_index(drop=True)
    g = g[clean_mask(g)]
    ids = pd.unique(g["source_id"])[:limit]
    g = g[g["source_id"].isin(ids)]
    derive = yaml.safe_load((ROOT / "params.yaml").read_text())["acquire"]["derive"]
    fit = derive_light_curve_parameters(g, **{k: v for k, v in derive.items()
                                              if k in ("min_period", "max_period", "min_epochs",
                                                       "n_jobs")})
    fit = fit[np.isfinite(fit["period"])].set_index("source_id")
    g = g[g["source_id"].isin(fit.index)]
    p = fit["period"].reindex(g["source_id"]).to_numpy()
    folded = pd.DataFrame({"source_id": g["source_id"].to_numpy(),
                           "phase": np.mod((g["time"].to_numpy()
                                            - fit["epoch_max"].reindex(g["source_id"]).to_numpy())
                                           / p, 1.0)})
    print(f"\n1. Real Gaia DR3: {len(fit)} stars folded at their derived periods "
          f"(tolerance {kn['tolerance_min']} min, periods {kn.get('min_period', 0.2)}-"
          f"{kn.get('max_period', 1.0)} d)")
    rows = []
    rng = np.random.default_rng(seed)
    for n in (*CUTS, None):
        for _ in range(n_draws if n else 1):
            sub = cut(folded, n, rng)
            t0 = time.perf_counter()
            out = scan_gap_periods(sub["source_id"].to_numpy(), sub["phase"].to_numpy(), **kn)
            wall = time.perf_counter() - t0
            right = np.abs(out["best_period"].to_numpy()
                           / fit["period"].reindex(out["source_id"]).to_numpy() - 1) < ALIAS_WINDOW
            for m in MARGINS:
                ok = out["z_margin"].to_numpy() >= m
                rows.append({"N": n or "full", "min margin": m, "stars": len(out),
                             "given a period": ok.mean(),
                             "right among them": right[ok].mean() if ok.any() else np.nan,
                             "stars/s": len(out) / wall})
    table = pd.DataFrame(rows).groupby(["N", "min margin"], sort=False).mean().reset_index()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def dg22(data_dir: Path, n_draws: int, seed: int, kn: dict) -> None:
    curves = read_dg22_curves(data_dir / "dg22" / "lc_dev_g.tar.gz")
    labels = read_dg22_labels(data_dir / "dg22" / "labels_dev.csv")
    curves = curves[curves["source_id"].isin(labels["source_id"])]
    curves = curves.assign(phase=np.mod(curves["phase"], 1.0)).drop_duplicates(
        ["source_id", "phase"])
    print(f"\n2. DG22: {curves['source_id'].nunique()} labelled pre-folded curves (min margin "
          f"{kn['min_z_margin']})")
    rng = np.random.default_rng(seed)
    rows = []
    for n in (*CUTS, None):
        for _ in range(n_draws if n else 1):
            sub = cut(curves, n, rng)
            t0 = time.perf_counter()
            out = scan_gap_periods(sub["source_id"].to_numpy(), sub["phase"].to_numpy(), **kn)
            wall = time.perf_counter() - t0
            rows.append({"N": n or "full", "stars": len(out),
                         "given a period": out["accepted"].mean(),
                         "median period (d)": out["period"].median(), "stars/s": len(out) / wall})
    table = pd.DataFrame(rows).groupby("N", sort=False).mean().reset_index()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--n-draws", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    kn = knobs()
    dr3(args.data_dir, args.limit, args.n_draws, args.seed, kn)
    dg22(args.data_dir, args.n_draws, args.seed, kn)


if __name__ == "__main__":
    main()
