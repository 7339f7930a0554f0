"""φ31 of sparse curves: the Fourier fit of N epochs against the template fit
(`rrlfeh.lightcurve.templates`), on the real Gaia DR3 RRab of ../shared, and what each gives a
plane in P, φ31, R21 and the amplitude refitted on the subsets (5-fold by star).

Run: .venv/bin/python benchmarks/template_phi31.py [--data-dir ../shared/data] [--unlabelled 2500]
     [--draws 3] [--max-templates 2000] [--seed 0]
Periods and epochs of maximum are derived from each star's full G curve (the project's derive).
Templates: the dense (>= 50 clean epochs) RRab among the labelled stars and `--unlabelled`
unlabelled ones (a seeded draw); each labelled dense RRab is cut to N random epochs (`--draws`
a star and N), its own template left out. Prints, per N: the median and rms |Δφ31| against the
full curve's φ31, fit and template, then the 5-fold RMSE of the line (fitted on the full curves,
at the subset's φ31) and of planes with and without the template values. Takes ~1 min on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rrlfeh.data.layouts import read_table, to_epochs
from rrlfeh.lightcurve.derive import clean_mask, derive_light_curve_parameters
from rrlfeh.lightcurve.features import fit_star
from rrlfeh.lightcurve.templates import build_bank, template_features
from rrlfeh.preprocess.network_input import centred_phi31

REPO = Path(__file__).resolve().parents[1]
SIZES = (15, 20, 25, 30)
PLANES = {"plane (P, φ31, R21, amplitude)": ["P", "phi31", "r21", "amp"],
          "+ template φ31, R21": ["P", "phi31", "r21", "amp", "phi31_t", "r21_t"]}


def load(data_dir: Path, n_unlabelled: int, seed: int) -> tuple[dict, pd.Series]:
    """Clean G epochs and the derived fit of every labelled star and a draw of unlabelled ones."""
    labels = read_table(data_dir / "gaia_dr3" / "labels_dev.csv").set_index("source_id")["feh"]
    raw = read_table(data_dir / "gaia_dr3" / "epoch_photometry.parquet")
    ids = pd.Series(pd.unique(raw["source_id"]))
    other = ids[~ids.isin(labels.index)].sample(min(n_unlabelled, (~ids.isin(labels.index)).sum()),
                                                random_state=seed)
    ep = to_epochs(raw[raw["source_id"].isin(set(labels.index) | set(other))])
    stars = derive_light_curve_parameters(ep, n_jobs=2).set_index("source_id")
    ep = ep[clean_mask(ep)]
    out = {}
    for sid, g in ep.groupby("source_id"):
        r = stars.loc[sid]
        if r["fit_ok"] and r["type"] == "RRab" and np.isfinite(r["phi31_g"]):
            out[sid] = {"t": g["time"].to_numpy(float), "m": g["mag"].to_numpy(float),
                        "s": (1.0857 * g["flux_error"] / g["flux"]).to_numpy(float),
                        "P": float(r["period"]), "t0": float(r["epoch_max"]),
                        "phi31": float(r["phi31_g"]), "n": len(g)}
    return out, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--unlabelled", type=int, default=2500)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--max-templates", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    stars, labels = load(args.data_dir, args.unlabelled, args.seed)
    dense = [s for s, v in stars.items() if v["n"] >= 50]
    grid = np.arange(264) / 264
    curves = [fit_star(stars[s]["t"], stars[s]["m"], stars[s]["s"], stars[s]["P"])[0]
              .model(stars[s]["t0"] + grid * stars[s]["P"]) for s in dense]
    fits = [fit_star(stars[s]["t"], stars[s]["m"], stars[s]["s"], stars[s]["P"])[0] for s in dense]
    bank = build_bank(np.array(curves), np.array([stars[s]["phi31"] for s in dense]),
                      np.array([f.r21 for f in fits]), np.array(dense),
                      max_templates=args.max_templates)
    targets = [s for s in dense if s in labels.index]
    rng = np.random.default_rng(args.seed)
    rows, phases, mags, sigmas, offsets = [], [], [], [], [0]
    for sid in targets:
        v = stars[sid]
        for n in SIZES:
            for _ in range(args.draws):
                pick = np.sort(rng.choice(v["n"], n, replace=False))
                t, m, s = v["t"][pick], v["m"][pick], v["s"][pick]
                try:
                    fit, _ = fit_star(t, m, s, v["P"])
                except (ValueError, np.linalg.LinAlgError):
                    continue
                phases.append(((t - fit.epoch_max) / v["P"]) % 1.0)
                mags.append(m)
                sigmas.append(s)
                offsets.append(offsets[-1] + n)
                rows.append({"sid": sid, "N": n, "P": v["P"], "feh": labels[sid],
                             "full": v["phi31"], "phi31_fit": fit.phi31, "r21": fit.r21,
                             "amp": fit.amplitude})
    df = pd.DataFrame(rows)
    start = time.perf_counter()
    df["phi31_tmpl"], df["r21_t"] = template_features(
        bank, np.concatenate(phases), np.concatenate(mags), np.concatenate(sigmas),
        np.array(offsets), df["sid"].to_numpy(np.int64))
    took = (time.perf_counter() - start) / len(df) * 1e3
    print(f"{len(bank)} templates (dense RRab, {len(targets)} of them labelled), "
          f"{len(df)} subsets of {len(targets)} labelled stars; template fit {took:.2f} ms a "
          "subset\n")
    print("| N | median |Δφ31| fit | template | rms |Δφ31| fit | template |")
    print("|---|---|---|---|---|")
    for n, g in df.groupby("N"):
        d = {k: np.abs(np.angle(np.exp(1j * (g[k] - g["full"])))) for k in ("phi31_fit",
                                                                            "phi31_tmpl")}
        print(f"| {n} | {np.nanmedian(d['phi31_fit']):.3f} | {np.nanmedian(d['phi31_tmpl']):.3f}"
              f" | {np.sqrt(np.nanmean(d['phi31_fit'] ** 2)):.3f} | "
              f"{np.sqrt(np.nanmean(d['phi31_tmpl'] ** 2)):.3f} |")
    df["phi31"], df["phi31_t"] = centred_phi31(df["phi31_fit"]), centred_phi31(df["phi31_tmpl"])
    full = pd.DataFrame({"sid": targets, "P": [stars[s]["P"] for s in targets],
                         "phi31": centred_phi31([stars[s]["phi31"] for s in targets]),
                         "feh": [labels[s] for s in targets]})
    fold = dict(zip(targets, np.random.default_rng(1).integers(0, 5, len(targets)), strict=True))
    df["fold"], full["fold"] = df["sid"].map(fold), full["sid"].map(fold)
    print("\n5-fold RMSE (dex) against the labels:\n")
    print("| N | subsets | line (full curves' fit, at the subset's φ31) | "
          + " | ".join(PLANES) + " |")
    print("|---|---|---|" + "---|" * len(PLANES))
    for n, g in df.dropna(subset=["phi31", "r21", "amp", "phi31_t", "r21_t"]).groupby("N"):
        pred = {k: np.full(len(g), np.nan) for k in ["line", *PLANES]}
        for f in range(5):
            tr, va = (g["fold"] != f).to_numpy(), (g["fold"] == f).to_numpy()
            ft = full[full["fold"] != f]
            a = np.column_stack([np.ones(len(ft)), ft["P"], ft["phi31"]])
            c = np.linalg.lstsq(a, ft["feh"], rcond=None)[0]
            pred["line"][va] = c[0] + c[1] * g["P"][va] + c[2] * g["phi31"][va]
            for k, cols in PLANES.items():
                x = np.column_stack([np.ones(len(g)), g[cols].to_numpy(float)])
                c = np.linalg.lstsq(x[tr], g["feh"].to_numpy()[tr], rcond=None)[0]
                pred[k][va] = x[va] @ c
        r = {k: np.sqrt(np.mean((v - g["feh"].to_numpy()) ** 2)) for k, v in pred.items()}
        print(f"| {n} | {len(g)} | " + " | ".join(f"{r[k]:.3f}" for k in pred) + " |")


if __name__ == "__main__":
    main()
