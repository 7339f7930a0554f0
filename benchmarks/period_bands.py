"""Periods you can trust without a catalogue: the G period of each real Gaia DR3 star against
periods derived independently from its BP and from its RP epochs (same code, same knobs).

Run: .venv/bin/python benchmarks/period_bands.py [--data-dir ../shared/data] [--limit N]
     [--n-jobs 2] [--tolerance 1e-3]
Prints, for G vs BP and G vs RP: stars with both periods, the share agreeing to 0.1 %, the
harmonic and scanning-law alias rates, and the disagreeing stars with their epoch counts and
fit quality (the usual why: few or noisy BP/RP epochs). Derived periods are cached per band in
benchmarks/.cache/ (the derivation takes ~1 min a band on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from rrlfeh.data.layouts import read_table, to_epochs
from rrlfeh.lightcurve.agreement import compare_periods, summary
from rrlfeh.lightcurve.derive import derive_light_curve_parameters

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache"


def derived(raw: pd.DataFrame, band: str, n_jobs: int, tag: str) -> pd.DataFrame:
    """Derived parameters of every star in one band (cached)."""
    path = CACHE / f"periods_{band}_{tag}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    start = time.perf_counter()
    out = derive_light_curve_parameters(to_epochs(raw, band=band), n_jobs=n_jobs)
    print(f"{band}: derived {len(out)} stars in {time.perf_counter() - start:.0f} s")
    CACHE.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=None, help="first N stars only")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    raw = read_table(args.data_dir / "gaia_dr3" / "epoch_photometry.parquet")
    if args.limit:
        raw = raw[raw["source_id"].isin(pd.unique(raw["source_id"])[:args.limit])]
    tag = f"n{raw['source_id'].nunique()}"
    fits = {b: derived(raw, b, args.n_jobs, tag).set_index("source_id") for b in ("G", "BP", "RP")}
    periods = pd.DataFrame({b: fits[b]["period"].where(fits[b]["fit_ok"]) for b in fits})
    periods = periods.reset_index()
    rel = compare_periods(periods, "G", ("BP", "RP"), args.tolerance)
    labels = read_table(args.data_dir / "gaia_dr3" / "labels_dev.csv")["source_id"]
    print(f"\n{len(periods)} stars; G periods for {int(periods['G'].notna().sum())}; "
          f"tolerance {args.tolerance:g} (relative)")
    for other in ("BP", "RP"):
        col = rel[f"{other}_vs_G"]
        s = summary(col)
        lab = summary(col[rel["source_id"].isin(labels)])
        print(f"\nG vs {other}: {s['n_both']} stars with both periods "
              f"({s['n_no_period']} without), agree to {args.tolerance:.1%}: "
              f"{s['share_agree']:.1%}; labelled stars: {lab['share_agree']:.1%} of "
              f"{lab['n_both']}")
        for key, value in s.items():
            if key.startswith("n_") and key not in ("n_both", "n_no_period", "n_agree"):
                print(f"  {key[2:].replace('_', ' '):18s} {value:5d} ({value / s['n_both']:.1%})")
        bad = rel.loc[~col.isin(["agree", "no period"]), "source_id"]
        if len(bad):
            g, o = fits["G"].loc[bad], fits[other].loc[bad]
            table = pd.DataFrame({"P_G": g["period"], f"P_{other}": o["period"],
                                  "relation": col[rel["source_id"].isin(bad)].to_numpy(),
                                  "n_G": g["n_epochs_g"], f"n_{other}": o["n_epochs_g"],
                                  "amp_G": g["amplitude_g"], f"amp_{other}": o["amplitude_g"]})
            print(f"  disagreeing stars: median epochs G {table['n_G'].median():.0f}, "
                  f"{other} {table[f'n_{other}'].median():.0f} (all stars: G "
                  f"{fits['G']['n_epochs_g'].median():.0f}, {other} "
                  f"{fits[other]['n_epochs_g'].median():.0f})")
            print(table.head(10).to_string(float_format=lambda v: f"{v:.5f}"))
    both = rel[(rel["BP_vs_G"] == "agree") & (rel["RP_vs_G"] == "agree")]
    print(f"\nG confirmed by both BP and RP: {len(both)} of {int(periods['G'].notna().sum())} "
          f"G periods ({len(both) / max(1, int(periods['G'].notna().sum())):.1%})")


if __name__ == "__main__":
    main()
