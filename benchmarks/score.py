"""Scoring speed of the registered pyfunc `rrl-feh` on the real Gaia DR3 curves, end to end.

1. End to end: the loaded pyfunc on the real Gaia DR3 G curves as `rrlfeh score` calls it
   (`pyfunc.predict_frame`: without MLflow's per-value input check, the server keeps it)
   (shared data, 9,999 stars, read with the pipeline's layout reader), in chunks of
   `--chunk-stars` stars as the `score` stage sends them, in two modes: (a) period, epoch of
   maximum and type given per star, as the Gaia catalogue vari_rrlyrae gives them (derived here
   once with rrlfeh.lightcurve.derive and cached in benchmarks/.cache/, excluded from the
   timing; stars it finds no period for are left out, as the catalogue would hold none); (b) raw
   curves without them on the first `--raw-stars` stars (derived inside the pyfunc,
   params={"derive_n_jobs": 2}).
   Mode (a) again with `--threads` chunks at once, as the score stage runs them
   (`score.threads`, rrlfeh.serving.pyfunc.predict_chunks), checked equal to the first run;
   and in `--processes` worker processes (`score.processes`, rrlfeh.serving.workers, each
   loading the model itself), as the score stage runs an input of more chunks than workers.
2. Where the time of (a) goes (reading, joining, the pyfunc's parts) and the goal line (>= 5,000
   curves/s end to end in mode (a), on 2 cores; the run in worker processes where there is one,
   else the threaded run).

The bare ensemble engines on the arrays of (a) are benchmarks/ensemble_engines.py; one-star
requests to the real `mlflow models serve` benchmarks/serve_latency.py (and under concurrent
load benchmarks/serve_load.py).

`--ensemble champion` scores with the registered model (`--model-uri` under `--tracking-uri`);
`--ensemble synthetic` with the champion's settings (params.yaml's where none is registered) and
10 untrained members of the paper network per type (NetworkSpec(), realistic speed), saved as a
pyfunc in a temporary folder. Prints figures; asserts nothing. The machine is shared: the load
average is printed at the start and the end.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/score.py [--n-stars 9999]
        [--ensemble champion|synthetic] [--synthetic-members 10] [--tracking-uri URI]
        [--model-uri URI] [--raw-stars 1000] [--chunk-stars 2000] [--threads 2]
        [--processes 2] [--passes 2]
        [--spline-chunk 256] [--gc-freeze] [--data DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scoring_setup import (
    REPO,
    add_options,
    instrument,
    load_curves,
    load_model,
    model_uri,
    resolve,
    run_benchmark,
    score_mode,
    with_spline_chunk,
)

GOAL = 5000.0  # curves/s end to end on 2 cores (issue 18)


def print_mode(name: str, r: dict[str, Any]) -> None:
    ok = r["out"]["status"] == "ok"
    why = r["out"].loc[~ok, "status"].str.split(r" \(|:|;", regex=True).str[0].str.replace(
        r"\d[\d.]*", "#", regex=True).str.strip()
    top = "; ".join(f"{k} {v}" for k, v in why.value_counts().head(3).items())
    print(f"  {name}: {r['n']:,} stars in {len(r['per_chunk'])} call(s): predict "
          f"{r['predict']:.2f} s = {r['n'] / r['predict']:,.0f} curves/s (preprocessing "
          f"included); {int(ok.sum()):,} scored 'ok'" + (f", others: {top}" if top else ""))
    print("    seconds per call: " + ", ".join(f"{s:.2f}" for s in r["per_chunk"])
          + f"; Python's full garbage collections meanwhile: {r['gc'][0]}, {r['gc'][1]:.2f} s")


def print_breakdown(a: dict[str, Any], b: dict[str, Any], t_read: float, n_file: int,
                    threaded: dict[str, Any] | None = None) -> None:
    """Where the time of mode (a) goes, and the goal line (on the threaded run where given:
    how the score stage runs)."""
    n = a["n"]
    read = t_read * n / n_file
    parts = dict(a["parts"])
    inside = sum(parts.values())
    rows = [("reading (RAW parquet -> epochs, this share of the whole file)", read),
            ("cutting chunks of stars", a["cut"]),
            ("joining (request_frame: per-star values onto the epochs)", a["join"])]
    rows += [(f"pyfunc: {k}", v) for k, v in parts.items() if v > 0]
    rows.append(("pyfunc: other (MLflow schema check, statuses, domain, output)",
                 a["predict"] - inside))
    rows.append(("  (all parts: Python's full garbage collections, "
                 f"{a['gc'][0]} of them)", a["gc"][1]))
    total = read + a["cut"] + a["join"] + a["predict"]
    print(f"\n2. where the time goes, mode (a), {n:,} stars")
    for name, s in rows:
        print(f"  {name:66s} {s:7.2f} s {100 * s / total:5.1f} %  "
              f"({n / s:>9,.0f} curves/s alone)" if s > 0 else f"  {name:66s} {s:7.2f} s")
    print(f"  {'total':66s} {total:7.2f} s        ({n / total:>9,.0f} curves/s)")
    if b["parts"]:
        bt = b["predict"]
        print(f"  mode (b), {b['n']:,} stars: predict {bt:.2f} s, of which "
              + ", ".join(f"{k} {v:.2f} s" for k, v in b["parts"].items() if v > 0))
    e2e = n / a["predict"]
    print(f"\nend to end, mode (a): pyfunc predict {e2e:,.0f} curves/s; with reading and "
          f"joining {n / total:,.0f} curves/s ({os.cpu_count()} cores)")
    how = "pyfunc predict, mode a, one chunk at a time"
    if threaded is not None:
        e2e = threaded["n"] / threaded["predict"]
        many = threaded["processes"] if threaded["processes"] > 1 else threaded["threads"]
        kind = "worker processes" if threaded["processes"] > 1 else "threads"
        how = (f"mode a, {many} chunks at once in {kind} as the score stage runs them, "
               "cutting and joining included")
        read_all = read * threaded["n"] / n
        print(f"end to end, mode (a), {many} {kind}: {e2e:,.0f} curves/s (+ reading "
              f"{read_all:.2f} s: {threaded['n'] / (threaded['predict'] + read_all):,.0f} "
              "curves/s)")
    print(f"goal >= {GOAL:,.0f} curves/s end to end on 2 cores: "
          f"{'met' if e2e >= GOAL else 'missed'} ({e2e:,.0f} curves/s, {how})")


def full_collection(freeze: bool) -> None:
    """How long a full garbage collection of this process takes (and after gc.freeze())."""
    objects = len(gc.get_objects())
    t0 = time.perf_counter()
    gc.collect()
    print(f"a full garbage collection of this process ({objects:,} objects tracked) takes "
          f"{time.perf_counter() - t0:.2f} s", end="")
    if freeze:
        gc.freeze()
        t0 = time.perf_counter()
        gc.collect()
        print(f"; after gc.freeze() (--gc-freeze) {time.perf_counter() - t0:.3f} s", end="")
    print()


def run_all(args: argparse.Namespace, tmp: Path) -> None:
    t_start = time.perf_counter()
    uri, what = model_uri(args, tmp)
    model = load_model(uri, what)
    curves = model.unwrap_python_model().model.settings["preprocess"]["curves"]
    if args.spline_chunk and args.spline_chunk != curves.get("chunk_size"):
        print(f"  the spline's chunk_size {curves.get('chunk_size')} of the model's settings -> "
              f"{args.spline_chunk} (--spline-chunk: what a model trained with params.yaml now "
              "carries; the same numbers, benchmarks/chunk_sizes.py), in a local copy")
        uri = with_spline_chunk(uri, args.spline_chunk, tmp)
        model = load_model(uri, f"{what}, chunk_size {args.spline_chunk}")
    data = load_curves(args)
    epochs, known, cat_ids = data.epochs, data.known, data.cat_ids
    full_collection(args.gc_freeze)
    timers = instrument()
    try:
        # warm-up, one pass over every chunk: tracing, the XLA compiles of each padded batch
        # shape of the network's rows (~0.3 s each, once per process: on a catalogue of
        # 270,000 stars a few seconds of minutes), imports; left out
        t0 = time.perf_counter()
        warm = score_mode(model, epochs, known, cat_ids, args.chunk_stars, timers)
        print(f"warm-up: one pass over the {warm['n']:,} stars {time.perf_counter() - t0:.1f} s, "
              "left out (tracing, XLA compiles of the batch shapes)", flush=True)

        print(f"\n1. end to end, pyfunc predict in chunks of {args.chunk_stars} stars")
        a = score_mode(model, epochs, known, cat_ids, args.chunk_stars, timers)
        print_mode("(a) period, epoch of maximum, type given (the goal's mode)", a)
        # the worker processes first: after the run in threads, this process (which then only
        # cuts and joins) left them a fifth slower in one trial; the stage runs one or the other
        a3 = None
        if args.processes > 1:
            a3 = in_processes(args, uri, model_settings_note=what, epochs=epochs, known=known,
                              cat_ids=cat_ids, timers=timers, reference=a)
        a2 = None
        if args.threads > 1:
            a2 = score_mode(model, epochs, known, cat_ids, args.chunk_stars, timers,
                            threads=args.threads)
            print_mode(f"(a) the same with {args.threads} chunks at once in threads (the score "
                       "stage's score.threads; cutting and joining included)", a2)
            same = np.allclose(a2["out"]["feh"], a["out"]["feh"], rtol=0, atol=0,
                               equal_nan=True)
            print(f"    the same [Fe/H] to the last bit as one at a time: {same}")
        raw_ids = data.ids[: args.raw_stars]
        b: dict[str, Any] = {"n": 0, "parts": {}}  # --raw-stars 0: mode (b) left out
        if len(raw_ids):
            empty = pd.DataFrame({"source_id": pd.Series(dtype=np.int64),
                                  "period": pd.Series(dtype=float),
                                  "epoch_max": pd.Series(dtype=float),
                                  "type": pd.Series(dtype=object)})
            b = score_mode(model, epochs, empty, raw_ids, args.chunk_stars, timers,
                           params={"derive_n_jobs": 2})
            print_mode(f"(b) raw curves, the first {len(raw_ids):,} stars (a subset), derived "
                       "in the pyfunc with derive_n_jobs=2", b)
    finally:
        timers.restore()

    print_breakdown(a, b, data.t_read, epochs["source_id"].nunique(), a3 or a2)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")


def in_processes(args: argparse.Namespace, uri: str, model_settings_note: str,
                 epochs: pd.DataFrame, known: pd.DataFrame, cat_ids: np.ndarray,
                 timers: Any, reference: dict[str, Any]) -> dict[str, Any]:
    """Mode (a) in `--processes` worker processes (`score.processes`, serving.workers), each
    loading the model itself: the stars `--passes` times over in one run of chunks, so that
    both workers stay busy as over a catalogue's hundreds of chunks (5 chunks on 2 workers
    would leave one idle for a round), after the workers' start and two warm-up passes over
    the same chunks (each worker's XLA compiles of the batch shapes it meets), both timed
    apart. Checked against one at a time in this process."""
    from rrlfeh.serving.workers import worker_pool

    t0 = time.perf_counter()
    with worker_pool(uri, args.processes, args.tracking_uri) as pool:
        list(pool.map(abs, range(args.processes)))  # the workers' start
        start = time.perf_counter() - t0
        ids = np.concatenate([cat_ids] * args.passes)
        t0 = time.perf_counter()
        for _ in range(2):  # the same chunks: each worker compiles the batch shapes it meets
            score_mode(None, epochs, known, ids, args.chunk_stars, timers, pool=pool,
                       processes=args.processes)
        warm = time.perf_counter() - t0
        r = score_mode(None, epochs, known, ids, args.chunk_stars, timers, pool=pool,
                       processes=args.processes)
    print_mode(f"(a) the same in {args.processes} worker processes (score.processes; the "
               f"{len(cat_ids):,} stars {args.passes} times over, cutting and joining included; "
               f"workers' start {start:.1f} s and two warm-up passes {warm:.1f} s left out)", r)
    one = reference["out"].set_index("source_id")["feh"]
    mine = r["out"].drop_duplicates("source_id").set_index("source_id")["feh"].reindex(one.index)
    diff = float(np.nanmax(np.abs(mine.to_numpy() - one.to_numpy())))
    same_nan = bool((mine.isna() == one.isna()).all())
    print(f"    the same [Fe/H] as one at a time in this process: largest difference {diff:.1e} "
          f"dex, the same stars without a value: {same_nan} ({model_settings_note})")
    return r


def score_threads() -> int:
    """score.threads of params.yaml: how the score stage runs."""
    import yaml

    return int(yaml.safe_load((REPO / "params.yaml").read_text())["score"].get("threads", 1))


def score_processes() -> int:
    """score.processes of params.yaml: how the score stage runs over many chunks."""
    import yaml

    return int(yaml.safe_load((REPO / "params.yaml").read_text())["score"].get("processes", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument("--raw-stars", type=int, default=1000,
                        help="stars of mode (b), raw curves (period search in the pyfunc; 0: none)")
    parser.add_argument("--chunk-stars", type=int, default=2000,
                        help="stars per predict call (the score stage's chunk_stars)")
    parser.add_argument("--threads", type=int, default=score_threads(),
                        help="chunks at once in threads, as the score stage (default: "
                             "params.yaml score.threads; 1: that run left out)")
    parser.add_argument("--processes", type=int, default=score_processes(),
                        help="worker processes, as the score stage over many chunks (default: "
                             "params.yaml score.processes; 1: that run left out)")
    parser.add_argument("--passes", type=int, default=2,
                        help="times over the stars in the worker processes' run")
    parser.add_argument("--spline-chunk", type=int, default=0,
                        help="stars a spline solve, instead of the model's setting "
                             "(preprocess.curves.chunk_size; 0: the model's)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after loading the model and data (what the pyfunc's "
                             "load_context could do): full collections then skip those objects")
    parser.add_argument("--skip-missing", action="store_true",
                        help="say so and stop where --model-uri is not registered (make bench: "
                             "the real-data champion exists after make realdata only)")
    args = parser.parse_args()
    if args.skip_missing and args.ensemble == "champion" and not registered(args):
        print(f"{args.model_uri} is not in {args.tracking_uri}: skipped (make realdata "
              "registers the real-data champion)")
        return
    run_benchmark(args, run_all, "rrlfeh-score-bench-")


def registered(args: argparse.Namespace) -> bool:
    """Whether `--model-uri` (models:/name@alias) resolves in `--tracking-uri`'s registry."""
    from scoring_setup import registry_missing

    if registry_missing(args.tracking_uri):
        return False
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    try:
        resolve(args.model_uri)
    except Exception:  # noqa: BLE001 - no such model or alias
        return False
    return True


if __name__ == "__main__":
    main()
