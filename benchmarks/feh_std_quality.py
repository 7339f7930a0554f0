"""feh_std with and without the fit's quality scale (`served.residual_scales`), judged on stars
it was not calibrated on: the out-of-fold residuals of a finished run (the calibration rows of
`train`), the training stars split in two by star for several seeds, each half judged with the
scatter (and scale) calibrated on the other half. Prints, per type and bin of epoch counts,
the held-out mean negative log-likelihood (Gaussian; lower is better: a proper score of the
whole error, not only its coverage) and the shares within ±1 and ±2 feh_std, without the
scale / with it.

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
)
from rrlfeh.training.arrays import load_training_set
from rrlfeh.training.served import bin_index


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
        b, star, q = bins[cal], data.source_id[cal], fit_quality(data)[cal]
        n_bins = len(edges) - 1
        print(f"\n{kind}: {cal.sum()} out-of-fold curves; per bin: held-out NLL without / with "
              "the scale, ±1 and ±2 shares without / with")
        better = cases = 0
        for seed in args.seeds:
            zero = np.zeros(res.size)  # the members' spread left out (see above)
            t0 = held_out_errors(res, zero, b, star, n_bins, seed)
            t1 = held_out_errors(res, zero, b, star, n_bins, seed, q)
            print(f"  halves seed {seed}")
            for i in range(n_bins):
                m = b == i
                if not m.any():
                    continue
                nll = [float(np.mean(np.log(t[m]) + 0.5 * (res[m] / t[m]) ** 2))
                       for t in (t0, t1)]
                c1 = [100 * np.mean(np.abs(res[m]) <= t[m]) for t in (t0, t1)]
                c2 = [100 * np.mean(np.abs(res[m]) <= 2 * t[m]) for t in (t0, t1)]
                hi = "" if edges[i + 1] >= 1e5 else f"{edges[i + 1]:g}"
                print(f"    {edges[i]:g}-{hi:>4} epochs, {int(m.sum()):4d} curves: NLL "
                      f"{nll[0]:+.3f} / {nll[1]:+.3f}   ±1 {c1[0]:.1f} / {c1[1]:.1f} %   "
                      f"±2 {c2[0]:.1f} / {c2[1]:.1f} %")
                better += nll[1] < nll[0] - 1e-9
                cases += abs(nll[1] - nll[0]) > 1e-9
        print(f"  the scale gives a better held-out NLL in {better} of {cases} (bin, seed) cases "
              "where the two differ")


if __name__ == "__main__":
    main()
