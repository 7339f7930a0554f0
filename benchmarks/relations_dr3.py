"""Classical relations on the real Gaia DR3 labelled RRab stars: published as they stand and the
same forms refitted, on a stratified test split set aside once (20 %, seed 42), never used to
choose anything; refits are fitted on the training part only (and K-folded on it).

Run: .venv/bin/python benchmarks/relations_dr3.py [--data-dir ../shared/data] [--n-jobs 2]
     [--min-epochs 40] [--max-phi31-error 0.2]
Period, φ31 and R21 are derived from the G epochs (rrlfeh.lightcurve.derive; cached in
benchmarks/.cache/ as benchmarks/period_bands.py caches them). Cuts as the README's real-data
run: type RRab, amplitude <= 1.4 mag, >= --min-epochs clean epochs, σφ31 <= --max-phi31-error.
The labels are photometric [Fe/H] from a P-φ31 relation on Gaia's own φ31, so a refitted
P-φ31 form is expected to come close: it is the bar the network has to clear.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from rrlfeh.data.layouts import read_epoch_photometry, read_table
from rrlfeh.lightcurve.derive import derive_light_curve_parameters
from rrlfeh.relations import RRAB_PUBLISHED
from rrlfeh.training.kfold import stratified_folds
from rrlfeh.training.metrics import regression_metrics
from rrlfeh.weights import feh_strata

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / ".cache"


def g_parameters(data_dir: Path, n_jobs: int) -> pd.DataFrame:
    """Derived G parameters of all 9,999 stars (the cache of period_bands.py when present)."""
    path = CACHE / "periods_G_n9999.parquet"
    if path.exists():
        return pd.read_parquet(path)
    out = derive_light_curve_parameters(
        read_epoch_photometry(data_dir / "gaia_dr3" / "epoch_photometry.parquet"), n_jobs=n_jobs)
    CACHE.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path)
    return out


def row(name: str, y: np.ndarray, pred: np.ndarray) -> dict:
    m = regression_metrics(y, pred, np.ones(len(y)))
    return {"relation": name, "n": len(y), "R2": m["r2"], "RMSE": m["rmse"], "MAE": m["mae"],
            "bias": float(np.mean(pred - y))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--min-epochs", type=int, default=40)
    ap.add_argument("--max-phi31-error", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    g = g_parameters(args.data_dir, args.n_jobs)
    labels = read_table(args.data_dir / "gaia_dr3" / "labels_dev.csv")
    s = g.merge(labels[["source_id", "feh"]], on="source_id")
    cut = (s["fit_ok"] & (s["type"] == "RRab") & (s["amplitude_g"] <= 1.4)
           & (s["n_epochs_g"] >= args.min_epochs) & (s["phi31_g_error"] <= args.max_phi31_error)
           & s[["period", "phi31_g", "r21_g"]].notna().all(axis=1))
    s = s[cut].reset_index(drop=True)
    y = s["feh"].to_numpy(float)
    p, phi, r21 = (s[c].to_numpy(float) for c in ("period", "phi31_g", "r21_g"))
    strata = feh_strata(y)
    tr, te = train_test_split(np.arange(len(s)), test_size=0.2, stratify=strata,
                              random_state=args.seed)
    print(f"{len(labels)} labels, {len(s)} labelled RRab after the cuts "
          f"(>= {args.min_epochs} epochs, sigma phi31 <= {args.max_phi31_error}); "
          f"train {len(tr)}, test {len(te)} (stratified, seed {args.seed})\n")
    rows = []
    for rel in RRAB_PUBLISHED:
        rows.append(row(f"{rel.name}, as published", y[te], rel.predict(p[te], phi[te], r21[te])))
    for rel in RRAB_PUBLISHED:
        fit = rel.refit(p[tr], phi[tr], r21[tr], y[tr])
        r = row(f"{rel.name} form, refitted on train", y[te], fit.predict(p[te], phi[te],
                                                                          r21[te]))
        kf = []
        for _, _, a, b in stratified_folds(strata[tr], 5, 2, args.seed):
            f2 = rel.refit(p[tr][a], phi[tr][a], r21[tr][a], y[tr][a])
            kf.append(regression_metrics(y[tr][b], f2.predict(p[tr][b], phi[tr][b], r21[tr][b]),
                                         np.ones(len(b))))
        r2s = [m["r2"] for m in kf]
        r["kfold R2"] = f"{np.mean(r2s):.3f} +- {np.std(r2s):.3f}"
        r["coef"] = ", ".join(f"{c:.3f}" for c in fit.coef)
        rows.append(r)
    table = pd.DataFrame(rows).set_index("relation")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print("test split:")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
