"""Benchmark: the period search on the real Gaia DR3 light curves, against nifty-ls and astropy.

Run: .venv/bin/python benchmarks/period_search.py [--data-dir ../shared/data] [--limit N]
     [--n-jobs 2] [--repeats 3] [--synthetic 2000] [--engines ours,nifty-ls,astropy]
     [--save derived.csv] [--no-derive] [--set KNOB=VALUE ...]
1. The derivation (derive_light_curve_parameters, G epochs, incl. process start-up): stars/s,
   where the periods land (RRc range, RRab range, grid edges), failures by reason, and two
   physics checks on the labelled stars: [Fe/H] from -6.93 - 6.04 P + 1.65 phi31 against the
   labels (only right if P and phi31 are), and corr([Fe/H], P) (~ -0.7 for RRab). --save writes
   its table (csv): compare the periods of two versions with it.
2. The period search alone, one engine at a time on the same stars and the same trial
   frequencies (1/max_period to 1/min_period, step 1/(5 baseline): this project's coarse grid at
   today's oversampling; ours refines its own peaks finer): this project's `search_period`
   (params.yaml's acquire.derive knobs), nifty-ls and astropy LombScargle (both 1-term, their
   highest peak). In --n-jobs warm worker processes (one BLAS thread each): stars/s of the G
   search over --repeats interleaved repeats (min, median, and ratio to ours); the share of
   stars whose G period agrees with the BP one to 0.1 % (rrlfeh.lightcurve.agreement), on the
   stars this project's search fits in both bands (>= min_epochs epochs, false-alarm probability
   <= max_false_alarm, not at a search limit); the share of --synthetic RRab of the embedded
   generator (rrlfeh.data.synthetic) whose period is found to 0.1 %.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import multiprocessing
import re
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from rrlfeh.data.layouts import read_table, to_epochs
from rrlfeh.lightcurve.agreement import relation
from rrlfeh.lightcurve.derive import _star_slices, derive_light_curve_parameters

REPO = Path(__file__).resolve().parents[1]
GRID_OVERSAMPLING = 5.0   # the comparison engines' grid step: 1/(5 baseline)

Star = tuple[np.ndarray, np.ndarray, np.ndarray]


# --- engines: (t, mag, sigma, knobs) -> (period, fitted) ------------------------------------------

def ours(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, knobs: dict[str, Any]
         ) -> tuple[float, bool]:
    """This project's search; fitted as derive keeps a period (significant, off the limits)."""
    from rrlfeh.lightcurve.period import search_period

    # its knobs among acquire.derive (the others are the Fourier fit's and derive's)
    search = {k: v for k, v in knobs.items() if k in inspect.signature(search_period).parameters}
    try:
        found = search_period(t, mag, sigma, **search)
    except (ValueError, np.linalg.LinAlgError):
        return np.nan, False
    return found.period, bool(found.false_alarm <= knobs["max_false_alarm"]
                              and not found.at_edge)


def _grid(t: np.ndarray, knobs: dict[str, Any]) -> tuple[float, float, int]:
    """(f_min, df, n_freq): today's coarse grid of `search_period` for these times."""
    f_min, f_max = 1.0 / knobs["max_period"], 1.0 / knobs["min_period"]
    df = 1.0 / (GRID_OVERSAMPLING * float(t.max() - t.min()))
    return f_min, df, int(np.ceil((f_max - f_min) / df)) + 1


def nifty(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, knobs: dict[str, Any]
          ) -> tuple[float, bool]:
    """nifty-ls (finufft, 1 term, floating mean): the highest peak of the grid."""
    import nifty_ls

    f_min, df, n_freq = _grid(t, knobs)
    power = nifty_ls.lombscargle(t, mag, sigma, fmin=f_min, fmax=f_min + (n_freq - 1) * df,
                                 Nf=n_freq, nthreads=1).power
    return 1.0 / (f_min + int(np.argmax(power)) * df), True


def astropy_ls(t: np.ndarray, mag: np.ndarray, sigma: np.ndarray, knobs: dict[str, Any]
               ) -> tuple[float, bool]:
    """astropy LombScargle (1 term, floating mean, 'fast' on the regular grid): highest peak."""
    from astropy.timeseries import LombScargle

    f_min, df, n_freq = _grid(t, knobs)
    freqs = f_min + np.arange(n_freq) * df
    power = LombScargle(t, mag, sigma).power(freqs, assume_regular_frequency=True)
    return 1.0 / freqs[int(np.argmax(power))], True


ENGINES: dict[str, Callable[..., tuple[float, bool]]] = {
    "ours": ours, "nifty-ls": nifty, "astropy": astropy_ls}


# --- worker processes ---

def _init_worker() -> None:
    """One BLAS/OpenMP thread per worker process, as derive's workers run."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _run_chunk(engine: str, stars: list[Star], knobs: dict[str, Any]) -> list[tuple[float, bool]]:
    """One engine on a chunk of stars (a star too short for derive: NaN, not fitted)."""
    fn = ENGINES[engine]
    return [fn(t, m, s, knobs) if len(t) >= knobs["min_epochs"] else (np.nan, False)
            for t, m, s in stars]


def run_engine(pool: ProcessPoolExecutor, engine: str, stars: list[Star], knobs: dict[str, Any],
               chunk: int = 200) -> tuple[np.ndarray, np.ndarray, float]:
    """(periods, fitted, wall seconds) of one engine over all stars in the warm pool."""
    chunks = [stars[i:i + chunk] for i in range(0, len(stars), chunk)]
    start = time.perf_counter()
    rows = [r for res in pool.map(_run_chunk, [engine] * len(chunks), chunks,
                                  [knobs] * len(chunks)) for r in res]
    wall = time.perf_counter() - start
    period, fitted = (np.array(v) for v in zip(*rows, strict=True)) if rows else (
        np.zeros(0), np.zeros(0, bool))
    return period.astype(float), fitted.astype(bool), wall


# --- data ---

def star_arrays(epochs: pd.DataFrame) -> tuple[np.ndarray, list[Star]]:
    """Source ids (order of first appearance) and each star's clean (t, mag, sigma), read as
    derive reads them."""
    ids = pd.unique(epochs["source_id"].to_numpy(dtype=np.int64))
    bounds, a = _star_slices(epochs, 0.0)
    stars = []
    for s in ids.tolist():
        i, j = bounds.get(s, (0, 0))
        stars.append((a["t"][i:j], a["mag"][i:j], a["sigma"][i:j]))
    return ids, stars


def synthetic_rrab(n: int) -> tuple[np.ndarray, list[Star]]:
    """True periods and clean G curves of n RRab stars of the embedded generator (seed 42)."""
    from rrlfeh.data.synthetic import generate

    data = generate(n, seed=42, frac_rrc=0.0)
    ids, stars = star_arrays(data.epochs)
    period = data.truth.set_index("source_id").loc[ids, "period"].to_numpy(float)
    return period, stars


def derive_knobs() -> dict[str, Any]:
    """acquire.derive of params.yaml with derive's defaults for the knobs it leaves out."""
    with open(REPO / "params.yaml") as fh:
        knobs = dict(yaml.safe_load(fh)["acquire"]["derive"])
    knobs.setdefault("min_epochs", 12)
    knobs.setdefault("max_false_alarm", 1e-3)
    return knobs


# --- part 1: the derivation and its physics checks ---

def derive_checks(epochs: pd.DataFrame, data_dir: Path, n_jobs: int, save: Path | None,
                  knobs: dict[str, Any]) -> None:
    """Run the derivation once and print its speed, failures and physics checks."""
    n_stars = epochs["source_id"].nunique()
    start = time.perf_counter()
    out = derive_light_curve_parameters(
        epochs, **{k: v for k, v in knobs.items() if k != "n_jobs"}, n_jobs=n_jobs)
    wall = time.perf_counter() - start
    if save:
        out.to_csv(save, index=False)
    print(f"stars: {n_stars}  wall: {wall:.1f} s  speed: {n_stars / wall:.1f} stars/s "
          f"(n_jobs={n_jobs}, incl. process start-up)")

    ok = out[out["fit_ok"]]
    p = ok["period"]
    print(f"fitted: {len(ok)}  RRab range 0.42-1.0 d: {int((p >= 0.42).sum())}  "
          f"RRc range 0.2-0.42 d: {int((p < 0.42).sum())}  "
          f"types: {ok['type'].value_counts().to_dict()}")
    print(f"clean G epochs: median {out['n_epochs_g'].median():.0f}, "
          f"range {out['n_epochs_g'].min()}-{out['n_epochs_g'].max()}")
    bad = out[~out["fit_ok"]]
    print(f"not fitted: {len(bad)}  outliers clipped: {int(out['n_clipped'].sum())} points in "
          f"{int((out['n_clipped'] > 0).sum())} stars")
    # group reasons by their text with the numbers taken out
    kinds = bad["fit_reason"].map(lambda r: re.sub(r"\(.*\)|[-+]?\d[\d.e+-]*", "#", r))
    for kind, count in kinds.value_counts().items():
        print(f"  {count:5d}  {kind}")
    edges = bad["fit_reason"].str.contains("search limit").sum()
    print(f"at the grid edges (rejected): {int(edges)}")
    qs = np.nanpercentile(ok["phi31_g"], [5, 50, 95])
    print(f"period median {p.median():.4f} d; amplitude median {ok['amplitude_g'].median():.3f}; "
          f"phi31 5/50/95%: {qs.round(2).tolist()}; "
          f"median phi31 error {ok['phi31_g_error'].median():.3f}")
    physics_checks(ok, data_dir)


def physics_checks(ok: pd.DataFrame, data_dir: Path) -> None:
    """[Fe/H] from P and phi31 against the labels of the fitted labelled stars."""
    labels = pd.read_csv(data_dir / "gaia_dr3" / "labels_dev.csv")
    merged = labels.merge(ok, on="source_id")
    merged = merged[np.isfinite(merged["phi31_g"])]
    print(f"labelled stars fitted with phi31: {len(merged)} of {len(labels)}")
    if len(merged) < 3:
        return
    # the relation wants phi31 ~ 5.0-5.6 for RRab; the cosine-convention phi31 of real RRab is
    # ~2, so it is shown both as derived (cosine) and shifted by pi (sine convention)
    for name, phi in (("phi31 (cosine)", merged["phi31_g"]),
                      ("(phi31 + pi) (sine)", merged["phi31_g"] + np.pi)):
        pred = -6.93 - 6.04 * merged["period"] + 1.65 * phi
        resid = pred - merged["feh"]
        print(f"  [Fe/H] = -6.93 - 6.04 P + 1.65 {name} vs labels: "
              f"corr {np.corrcoef(pred, merged['feh'])[0, 1]:.3f}, "
              f"RMS {np.sqrt(np.mean(resid**2)):.3f} dex, median offset {resid.median():+.3f}, "
              f"robust sigma {1.4826 * np.median(np.abs(resid - resid.median())):.3f} dex")
    # labels are probably a linear P-phi31 relation on Gaia's catalogue values: if our P and
    # phi31 are right, a least-squares plane through them reproduces the labels closely
    design = np.column_stack([np.ones(len(merged)), merged["period"], merged["phi31_g"]])
    coef, *_ = np.linalg.lstsq(design, merged["feh"], rcond=None)
    resid = merged["feh"] - design @ coef
    print(f"  least-squares [Fe/H] = {coef[0]:.2f} + {coef[1]:.2f} P + {coef[2]:.2f} phi31: "
          f"RMS {np.sqrt(np.mean(resid**2)):.3f} dex, "
          f"robust sigma {1.4826 * np.median(np.abs(resid - resid.median())):.3f} dex, "
          f"|resid| > 0.5 dex: {int((resid.abs() > 0.5).sum())}")
    print(f"  corr([Fe/H], P): {np.corrcoef(merged['feh'], merged['period'])[0, 1]:.3f}  "
          f"corr([Fe/H], phi31): {np.corrcoef(merged['feh'], merged['phi31_g'])[0, 1]:.3f}")


# --- part 2: the engines ---

def agree_share(p_a: np.ndarray, p_b: np.ndarray, mask: np.ndarray) -> float:
    """Share of the masked stars whose two periods agree to 0.1 %."""
    rel = [relation(a, b) for a, b in zip(p_a[mask], p_b[mask], strict=True)]
    return float(np.mean([r == "agree" for r in rel])) if rel else float("nan")


def compare_engines(g: list[Star], bp: list[Star], synth: tuple[np.ndarray, list[Star]],
                    engines: list[str], knobs: dict[str, Any], n_jobs: int,
                    repeats: int) -> pd.DataFrame:
    """Speed (interleaved repeats of the G search) and accuracy of each engine."""
    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx, initializer=_init_worker) as pool:
        list(pool.map(_run_chunk, ["ours"] * n_jobs, [g[:1]] * n_jobs, [knobs] * n_jobs))
        print(f"\nworker start-up (spawn, imports): {time.perf_counter() - start:.1f} s, "
              f"not counted below")
        walls: dict[str, list[float]] = {e: [] for e in engines}
        res: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {e: {} for e in engines}
        for r in range(repeats):
            for e in engines[r % len(engines):] + engines[:r % len(engines)]:
                period, fitted, wall = run_engine(pool, e, g, knobs)
                walls[e].append(wall)
                res[e]["G"] = (period, fitted)
        for e in engines:
            res[e]["BP"] = run_engine(pool, e, bp, knobs)[:2]
            if synth[1]:
                res[e]["synthetic"] = run_engine(pool, e, synth[1], knobs)[:2]
    both = res["ours"]["G"][1] & res["ours"]["BP"][1] if "ours" in res else np.ones(len(g), bool)
    rows = []
    for e in engines:
        speed = len(g) / np.array(walls[e])
        rows.append({"engine": e, "stars/s min": speed.min(), "stars/s median": np.median(speed),
                     "G-BP agree": agree_share(res[e]["G"][0], res[e]["BP"][0], both),
                     "synthetic found": agree_share(synth[0], res[e]["synthetic"][0],
                                                    np.ones(len(synth[0]), bool))
                     if synth[1] else np.nan})
    table = pd.DataFrame(rows).set_index("engine")
    if "ours" in table.index:
        table["speed / ours"] = table["stars/s median"] / table.loc["ours", "stars/s median"]
    print(f"{len(g)} stars, {repeats} interleaved repeats of the G search, n_jobs={n_jobs}; "
          f"G-BP agreement on the {int(both.sum())} stars ours fits in both bands; "
          f"synthetic: {len(synth[0])} RRab")
    return table


def main() -> None:
    """Parse arguments, run the derivation and the engines, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=None, help="first N stars only")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the G search")
    ap.add_argument("--synthetic", type=int, default=2000,
                    help="synthetic RRab (0: none; no more than --limit)")
    ap.add_argument("--engines", default="ours,nifty-ls,astropy")
    ap.add_argument("--save", type=Path, default=None, help="write the derived table (csv)")
    ap.add_argument("--no-derive", action="store_true", help="skip part 1 (the derivation)")
    ap.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                    help="override an acquire.derive knob (repeatable), e.g. oversampling=5")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; choose from {sorted(ENGINES)}")
    if "nifty-ls" in engines and importlib.util.find_spec("nifty_ls") is None:
        ap.error("nifty-ls is not installed (pip install -e '.[dev]'), or leave it out: --engines")

    knobs = derive_knobs()
    for item in args.set:
        key, _, value = item.partition("=")
        knobs[key.strip()] = yaml.safe_load(value)
    raw = read_table(args.data_dir / "gaia_dr3" / "epoch_photometry.parquet")
    if args.limit:
        raw = raw[raw["source_id"].isin(pd.unique(raw["source_id"])[:args.limit])]
    g_epochs = to_epochs(raw, band="G").reset_index(drop=True)
    if not args.no_derive:
        derive_checks(g_epochs, args.data_dir, args.n_jobs, args.save, knobs)
    ids, g = star_arrays(g_epochs)
    bp_ids, bp_stars = star_arrays(to_epochs(raw, band="BP"))
    by_id = dict(zip(bp_ids.tolist(), bp_stars, strict=True))
    empty = (np.zeros(0), np.zeros(0), np.zeros(0))
    bp = [by_id.get(s, empty) for s in ids.tolist()]
    n_synth = min(args.synthetic, args.limit or args.synthetic)
    synth = synthetic_rrab(n_synth) if n_synth > 0 else (np.zeros(0), [])
    table = compare_engines(g, bp, synth, engines, knobs, args.n_jobs, args.repeats)
    with pd.option_context("display.width", 120):
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
