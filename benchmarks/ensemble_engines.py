"""Speed of the stacked ensemble alone, engine by engine, on the very arrays the pyfunc builds
from the real Gaia DR3 curves.

The pyfunc (`--ensemble champion|synthetic`, as benchmarks/score.py loads it) first scores the
first `--n-stars` real Gaia DR3 G curves in mode (a) of benchmarks/score.py (period, epoch of
maximum and type given per star, from the cached derived periods), in chunks of
`--chunk-stars` stars; the network input each ensemble gets (`Ensemble.predict`'s curves) is
kept, and on it, type by type: the member-by-member loop, the fused Keras model (predict at the
`--batches` batch sizes, model(x) in chunks, tf.function with and without XLA), the stacked
program `Ensemble.predict(..., fused=True)` runs (without and with XLA, and in two threads) and
ONNX Runtime where onnxruntime and tf2onnx import. Prints curves/s, cores used (CPU time / wall
time) and max |difference| in dex of the member predictions against the member loop (must be
<= 1e-5), and at the end the fastest engine within it per type. Asserts nothing. The machine
is shared: the load average is printed at the start and the end.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/ensemble_engines.py [--n-stars 9999]
        [--ensemble champion|synthetic] [--synthetic-members 10] [--tracking-uri URI]
        [--model-uri URI] [--chunk-stars 2000] [--batches 1024,4096,16384] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scoring_setup import (
    Timers,
    add_options,
    load_curves,
    load_model,
    model_uri,
    run_benchmark,
    score_mode,
)

TOLERANCE = 1e-5  # dex, any engine against the member loop


def fused_call(ens, chunk: int, mode: str):
    """The fused Keras model called directly on chunks: 'eager' model(x, training=False),
    'graph' a tf.function of it, 'xla' the same with jit_compile."""
    import tensorflow as tf

    model = ens.fused()
    spec = [tf.TensorSpec((None, *ens.input_shape), tf.float32)]
    fn = (lambda c: model(c, training=False)) if mode == "eager" else tf.function(
        lambda c: model(c, training=False), input_signature=spec, jit_compile=mode == "xla")

    def run(x: np.ndarray) -> np.ndarray:
        parts = [np.asarray(fn(tf.constant(x[i:i + chunk]))) for i in range(0, len(x), chunk)]
        return np.concatenate(parts).reshape(len(x), -1).T

    return run


def onnx_engine(ens, chunk: int):
    """ONNX Runtime on the fused model converted by tf2onnx; None where they do not import."""
    try:
        import onnxruntime as ort
        import tensorflow as tf
        import tf2onnx
    except ImportError:
        return None, "onnxruntime/tf2onnx not installed (pip install onnxruntime tf2onnx)"
    model = ens.fused()
    spec = [tf.TensorSpec((None, *ens.input_shape), tf.float32, name="curve")]
    t0 = time.perf_counter()
    proto, _ = tf2onnx.convert.from_function(
        tf.function(lambda c: model(c, training=False), input_signature=spec),
        input_signature=spec, opset=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    note = f"tf2onnx conversion {time.perf_counter() - t0:.0f} s, onnxruntime {ort.__version__}"

    def run(x: np.ndarray) -> np.ndarray:
        parts = [sess.run(None, {name: x[i:i + chunk]})[0] for i in range(0, len(x), chunk)]
        return np.concatenate(parts).reshape(len(x), -1).T

    return run, note


def two_threads(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`fn` on two halves of the curves at once (TensorFlow releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    half = -(-len(x) // 2)
    with ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(fn, [x[:half], x[half:]]))
    return np.concatenate(parts, axis=1)


def bench_ensemble(kind: str, ens, x: np.ndarray, batches: list[int],
                   results: list[dict[str, Any]]) -> None:
    """Every engine on the curves `x` of one type; rows appended to `results`."""
    from rrlfeh.training.ensemble import StackedGRU

    n = len(x)
    print(f"\n  [{kind}] {n:,} curves {x.shape[1:]}, {len(ens.models)} members", flush=True)

    def run(name: str, fn: Callable[[np.ndarray], np.ndarray], warm: str = "slice",
            note: str = "", limit: int | None = None) -> np.ndarray | None:
        m = min(n, limit or n)
        try:
            t0 = time.perf_counter()
            fn(x[:m] if warm == "full" else x[: min(m, 300)])  # tracing / XLA compiles
            first = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), time.process_time()
            p = np.asarray(fn(x[:m]), np.float32)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        except Exception as exc:  # noqa: BLE001 - an engine that fails is a figure too
            print(f"    {name:58s} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            return None
        diff = float(np.abs(p - ref[:, :m]).max()) if ref is not None else 0.0
        flag = "ok" if diff <= TOLERANCE else f"EXCEEDS {TOLERANCE:g}"
        extra = f"; first call {first:.1f} s" if warm == "full" else ""
        extra += f"; on the first {m:,} curves" if m < n else ""
        print(f"    {name:58s} {dt:7.2f} s {m / dt:8,.0f} curves/s {cpu / dt:4.1f} cores  "
              f"max|diff| {diff:.1e} dex {flag}{extra}{'; ' + note if note else ''}", flush=True)
        results.append({"kind": kind, "engine": name, "curves_per_s": m / dt, "diff": diff})
        return p

    ref = None
    ref = run("member loop (Keras predict per member, batch 1024)",
              lambda a: ens.member_predictions(a, 1024, fused=False))
    for b in batches:
        run(f"fused Keras model, predict, batch {b}",
            lambda a, b=b: ens.member_predictions(a, b, fused=True, engine="keras"))
    run("fused Keras model, model(x, training=False), chunks 4096", fused_call(ens, 4096,
                                                                                "eager"),
        limit=2048)  # eager: one Python dispatch per op and step, slow
    run("fused Keras model, tf.function (no XLA), chunks 4096", fused_call(ens, 4096, "graph"))
    run("fused Keras model, tf.function + XLA, chunks 4096", fused_call(ens, 4096, "xla"),
        warm="full")
    plain = StackedGRU.from_members(ens.models, jit_compile=False)
    if plain is not None:
        for b in (1024, 4096):
            run(f"stacked members, tf.function (no XLA), batch {b}",
                lambda a, b=b: plain(a, b))
    for b in batches:
        run(f"stacked members + XLA = predict(fused=True), batch {b}",
            lambda a, b=b: ens.member_predictions(a, b, fused=True), warm="full")
    run("stacked members + XLA, 2 threads, batch 2048 each",
        lambda a: two_threads(a, lambda h: ens.member_predictions(h, 2048, fused=True)),
        warm="full")
    try:
        fn, note = onnx_engine(ens, 4096)
    except Exception as exc:  # noqa: BLE001 - a conversion that fails is a figure too
        fn, note = None, f"conversion failed: {type(exc).__name__}: {str(exc)[:120]}"
    if fn is None:
        print(f"    {'ONNX Runtime':58s} skipped: {note}")
    else:
        run("ONNX Runtime (tf2onnx of the fused model), chunks 4096", fn, note=note)


def print_fastest(results: list[dict[str, Any]]) -> None:
    """The fastest engine per type among those within TOLERANCE of the member loop."""
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["diff"] <= TOLERANCE and r["curves_per_s"] > best.get(r["kind"], {}).get(
                "curves_per_s", 0):
            best[r["kind"]] = r
    print()
    for kind, r in best.items():
        print(f"fastest bare engine within {TOLERANCE:g} dex [{kind}]: {r['engine']}, "
              f"{r['curves_per_s']:,.0f} curves/s")


def run_all(args: argparse.Namespace, tmp: Path) -> None:
    from rrlfeh.training.ensemble import Ensemble

    t_start = time.perf_counter()
    model = load_model(*model_uri(args, tmp))
    data = load_curves(args)
    timers = Timers()  # keeps the curves each Ensemble.predict gets, by ensemble
    timers.patch(Ensemble, "predict", "ensemble", keep_arrays=True)
    timers.stash = True
    try:
        t0 = time.perf_counter()
        a = score_mode(model, data.epochs, data.known, data.cat_ids, args.chunk_stars, timers)
    finally:
        timers.restore()
    print(f"the pyfunc built the arrays of {a['n']:,} stars (mode a, chunks of "
          f"{args.chunk_stars}) in {time.perf_counter() - t0:.1f} s (first call included)")

    batches = [int(v) for v in args.batches.split(",") if v.strip()]
    print("\nthe bare ensemble on the arrays of (a) (member predictions; max|diff| "
          "against the member loop)")
    results: list[dict[str, Any]] = []
    for kind, ens in model.unwrap_python_model().model.ensembles.items():
        arrays = timers.arrays.get(id(ens))
        if arrays:
            bench_ensemble(kind, ens, np.concatenate(arrays), batches, results)
    print_fastest(results)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    parser.add_argument("--chunk-stars", type=int, default=2000,
                        help="stars per predict call that builds the arrays")
    parser.add_argument("--batches", default="1024,4096,16384",
                        help="batch sizes of the bare ensemble engines")
    run_benchmark(parser.parse_args(), run_all, "rrlfeh-engines-bench-")


if __name__ == "__main__":
    main()
