"""Benchmark: the DG22 champion on its test stars' folded curves, in full and cut to N points,
sent without a period (the pyfunc finds it in the phases' Gaia scan lags) and with the period.

Run after `make dg22` (in that workspace):
  .venv/bin/python benchmarks/dg22_sparse.py [--workspace .] [--data ../shared/data]
      [--n-draws 3] [--seed 7]
The model: the workspace's registered pyfunc folder (data/cache/register/model, the one `score`
uses); the stars: the test split of data/processed/RRab.npz (never used for a choice), each
cut to N random points of its DG22 file (stars with >= N + 5 points; --n-draws draws). Per N:
the share of subsets scored ("ok"), RMSE, MAE and R² against the label, and the share within
±1 / ±2 feh_std; "with P": the same subsets with the period the full curve gave. All through
`rrlfeh.serving.pipeline.score_request`, the path `rrlfeh predict` and the server take.
Beside it the line [Fe/H] = a + b·P + c·φ31 fitted on the training stars' full curves, at the
φ31 of each subset's own Fourier fit (in phase) and the period the champion used (no P: the one
it found; a subset it found none for is not scored by the line either): its share scored, its
RMSE, and both models' RMSE on the subsets both scored.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe_machine

from rrlfeh.data.dg22 import read_dg22_curves
from rrlfeh.lightcurve.features import fit_knobs
from rrlfeh.serving.inputs import read_request
from rrlfeh.serving.pipeline import ScoringModel, score_request
from rrlfeh.sparse import fit_line, line_predict
from rrlfeh.stages.sparse import subset_phi31

CUTS = (15, 20, 25, 30, 40)


def subsets(curves: pd.DataFrame, n: int | None, draws: int, rng: np.random.Generator
            ) -> pd.DataFrame:
    """Each star's points, or `draws` random subsets of n of them, as requests of their own
    (subset_id), with the star's source_id beside."""
    parts, next_id = [], 1
    for sid, g in curves.groupby("source_id", sort=False):
        if n is None or len(g) >= n + 5:
            for _ in range(1 if n is None else draws):
                pick = g if n is None else g.iloc[np.sort(rng.choice(len(g), n, replace=False))]
                parts.append(pick.assign(subset_id=next_id, star=sid))
                next_id += 1
    return pd.concat(parts, ignore_index=True)


def figures(out: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    ok = (out["status"] == "ok").to_numpy()
    r = out["feh"].to_numpy(float)[ok] - y[ok]
    z = np.abs(r) / out["feh_std"].to_numpy(float)[ok]
    return {"scored": ok.mean(), "rmse": float(np.sqrt(np.mean(r**2))) if ok.any() else np.nan,
            "mae": float(np.mean(np.abs(r))) if ok.any() else np.nan,
            "r2": float(1 - np.mean(r**2) / np.var(y[ok])) if ok.sum() > 1 else np.nan,
            "±1σ": float(np.mean(z <= 1)) if ok.any() else np.nan,
            "±2σ": float(np.mean(z <= 2)) if ok.any() else np.nan}


def line_feh(sub: pd.DataFrame, period: np.ndarray, coef: np.ndarray,
             knobs: dict) -> np.ndarray:
    """The line's [Fe/H] of each subset (in request order) at `period` (one a subset) and the φ31
    of the subset's own Fourier fit (`stages.sparse.subset_phi31`, as the sparse stage fits the
    line's φ31; the phases times the period as times: φ31 does not depend on the phase
    origin; no flux, so the default errors); NaN where the period is."""
    ids = pd.unique(sub["subset_id"])
    p = pd.Series(period, index=ids)
    chosen = sub.assign(time=sub["phase"].to_numpy(float) * p.reindex(sub["subset_id"]).to_numpy(),
                        flux=np.nan, flux_error=np.nan)
    return line_predict(coef, period, subset_phi31(chosen, p, knobs).reindex(ids).to_numpy())


def line_figures(out: pd.DataFrame, line: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The line's share scored and RMSE, and both models' RMSE on the subsets both scored."""
    both = (out["status"] == "ok").to_numpy() & np.isfinite(line)
    rmse = lambda r: float(np.sqrt(np.mean(r**2))) if r.size else np.nan  # noqa: E731
    return {"line scored": float(np.isfinite(line).mean()),
            "line rmse": rmse(line[np.isfinite(line)] - y[np.isfinite(line)]),
            "both: champion": rmse(out["feh"].to_numpy(float)[both] - y[both]),
            "both: line": rmse(line[both] - y[both])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=Path("."))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RRLFEH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--n-draws", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    print(f"machine: {describe_machine()}")
    model = ScoringModel.load(args.workspace / "data/cache/register/model")
    with np.load(args.workspace / "data/processed/RRab.npz") as d:
        own = d["copy"] == 0 if "copy" in d.files else np.ones(len(d["y"]), bool)
        test = own & d["is_test"].astype(bool)
        label = pd.Series(d["y"][test].astype(float), index=d["source_id"][test])
        period = pd.Series(d["period"][test].astype(float), index=d["source_id"][test])
        train = own & ~d["is_test"].astype(bool)
        coef = fit_line(d["period"][train], d["star_phi31"][train], d["y"][train])
    knobs = fit_knobs(model.settings["derive"])
    curves = read_dg22_curves(args.data / "dg22" / "lc_dev_g.tar.gz")
    curves = curves[curves["source_id"].isin(label.index)]
    print(f"{len(label)} DG22 test stars (the full curve gave each its period)")
    rng = np.random.default_rng(args.seed)
    rows = []
    for n in (*CUTS, None):
        sub = subsets(curves, n, args.n_draws, rng)
        y = label.reindex(sub.drop_duplicates("subset_id")["star"]).to_numpy()
        req = sub.assign(source_id=sub["subset_id"], type="RRab")[
            ["source_id", "phase", "mag", "type"]]
        with_p = req.assign(period=period.reindex(sub["star"]).to_numpy())
        for mode, frame in (("no P", req), ("with P", with_p)):
            out = score_request(read_request(frame), model)
            line = line_feh(sub, out["period"].to_numpy(float), coef, knobs)
            rows.append({"N": n or "full", "mode": mode, "subsets": len(out),
                         **figures(out, y), **line_figures(out, line, y)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"machine: {describe_machine()}")


if __name__ == "__main__":
    main()
