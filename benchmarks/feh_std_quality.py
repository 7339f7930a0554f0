"""feh_std without the fit's qualities, with φ31's error alone, and with φ31's error and the
disagreement of its estimates (`served.residual_scales`, what `train` calibrates), judged on
stars it was not calibrated on: the out-of-fold residuals of a finished run (the calibration
rows of `train`), the training stars split in two by star for several seeds, each half judged
with the scatter (and scales) calibrated on the other half. Prints, per type and bin of epoch
counts, the held-out mean negative log-likelihood (Gaussian; lower is better: a proper score of
the whole error, not only its coverage) and the shares within ±1 and ±2 feh_std, for the three
in that order.

Run after `make repro` (the default) or `make realdata` (the workspace then holds the real
run's arrays and fold predictions):
    .venv/bin/python benchmarks/feh_std_quality.py [--root .] [--seeds 7 11 23]
The members' spread is left out (0): the network's weight in these bins is ~0 on real DR3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.stages.train import (
    calibration_edges,
    calibration_rows,
    fit_quality,
    held_out_errors,
    served_template_epochs,
)
from rrlfeh.training.arrays import load_training_set
from rrlfeh.training.served import bin_index, gaussian_nll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 23])
    parser.add_argument("--min-origin-epochs", type=int, default=50)
    args = parser.parse_args()
    for kind in schema.TYPES:
        folds_path = args.root / f"models/crossval/{kind}/folds.json"
        if not folds_path.exists():
            print(f"{kind}: no K-fold predictions under {args.root}")
            continue
        data = load_training_set(args.root / f"data/processed/{kind}.npz", kind)
        oof = pd.read_parquet(args.root / f"models/crossval/{kind}/predictions.parquet")
        stack = json.loads(folds_path.read_text())["metrics"]["stack"]
        edges = calibration_edges(stack.get("edges", [0.0, 1.0e6]), data.n_epochs)
        bins = bin_index(data.n_epochs, edges)
        cal = calibration_rows(data, bins, args.min_origin_epochs)
        res = oof["served_oof"].to_numpy()[cal] - data.y[cal]
        cap = served_template_epochs(args.root / f"models/final/{kind}")
        b, star, q = bins[cal], data.source_id[cal], fit_quality(data, cap)[cal]
        n_bins = len(edges) - 1
        print(f"\n{kind}: {cal.sum()} out-of-fold curves; per bin: held-out NLL, ±1 and ±2 "
              "shares, each without the qualities / φ31's error alone / both")
        wins = np.zeros(3, int)
        cases = 0
        for seed in args.seeds:
            zero = np.zeros(res.size)  # the members' spread left out (see above)
            totals = [held_out_errors(res, zero, b, star, n_bins, seed),
                      held_out_errors(res, zero, b, star, n_bins, seed, q[:, 0]),
                      held_out_errors(res, zero, b, star, n_bins, seed, q)]
            print(f"  halves seed {seed}")
            for i in range(n_bins):
                m = b == i
                if not m.any():
                    continue
                nll = [gaussian_nll(res[m], t[m]) for t in totals]
                c1 = [100 * np.mean(np.abs(res[m]) <= t[m]) for t in totals]
                c2 = [100 * np.mean(np.abs(res[m]) <= 2 * t[m]) for t in totals]
                hi = "" if edges[i + 1] >= 1e5 else f"{edges[i + 1]:g}"
                print(f"    {edges[i]:g}-{hi:>4} epochs, {int(m.sum()):4d} curves: NLL "
                      + " / ".join(f"{v:+.3f}" for v in nll) + "   ±1 "
                      + " / ".join(f"{v:.1f}" for v in c1) + " %   ±2 "
                      + " / ".join(f"{v:.1f}" for v in c2) + " %")
                wins[int(np.argmin(nll))] += 1
                cases += 1
        print(f"  best held-out NLL of the {cases} (bin, seed) cases: without the qualities "
              f"{wins[0]}, φ31's error alone {wins[1]}, both {wins[2]}")


if __name__ == "__main__":
    main()
