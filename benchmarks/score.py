"""Scoring speed of the registered pyfunc `rrl-feh` on the real Gaia DR3 curves, end to end.

1. End to end: `mlflow.pyfunc.load_model(uri).predict(frame)` on the real Gaia DR3 G curves
   (shared data, 9,999 stars, read with the pipeline's layout reader), in chunks of
   `--chunk-stars` stars as the `score` stage sends them, in two modes: (a) period, epoch of
   maximum and type given per star, as the Gaia catalogue vari_rrlyrae gives them (derived here
   once with rrlfeh.lightcurve.derive and cached in benchmarks/.cache/, excluded from the
   timing; stars it finds no period for are left out, as the catalogue would hold none); (b) raw
   curves without them on the first `--raw-stars` stars (derived inside the pyfunc,
   params={"derive_n_jobs": 2}).
2. The bare ensemble on the very arrays the pyfunc built in (a): the member-by-member loop, the
   fused Keras model (predict at a few batch sizes, model(x) in chunks, tf.function with and
   without XLA), the stacked program `Ensemble.predict(..., fused=True)` runs (without and with
   XLA, and in two threads) and ONNX Runtime where onnxruntime and tf2onnx import; curves/s,
   cores used (CPU time / wall time) and max |difference| in dex of the member predictions
   against the member loop (must be <= 1e-5).
3. Where the time of (a) goes (reading, joining, the pyfunc's parts) and the goal line.
4. Serving: the real `mlflow models serve` (--env-manager local): p50/p95 latency of one-star
   requests, then throughput with `--clients` concurrent clients (bounded in requests and time).

`--ensemble champion` scores with the registered model (`--model-uri` under `--tracking-uri`);
`--ensemble synthetic` with the champion's settings (params.yaml's where none is registered) and
10 untrained members of the paper network per type (NetworkSpec(), realistic speed), saved as a
pyfunc in a temporary folder. Prints figures; asserts nothing. The machine is shared: the load
average is printed at the start and the end.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/score.py [--n-stars 9999]
        [--ensemble champion|synthetic] [--tracking-uri URI] [--model-uri URI]
        [--raw-stars 1000] [--chunk-stars 2000] [--batches 1024,4096,16384] [--skip-serving]
        [--data DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).parent / ".cache"
DERIVED = CACHE / "gaia_dr3_derived.parquet"  # the same cache as benchmarks/preprocess.py
BIN = Path(sys.executable).parent
GOAL = 2000.0  # curves/s end to end on 2 cores
TOLERANCE = 1e-5  # dex, any engine against the member loop


# ---------------------------------------------------------------------------- machine, data

def versions() -> str:
    import keras
    import mlflow
    import tensorflow as tf

    return (f"TensorFlow {tf.__version__}, Keras {keras.__version__} "
            f"({keras.backend.backend()}), MLflow {mlflow.__version__}")


def load_epochs(data: Path) -> tuple[pd.DataFrame, float]:
    """(the canonical epochs table of the real file, seconds to read it), rejected rows kept
    with rejected=True, as the pipeline's layout reader gives them."""
    from rrlfeh.data.layouts import read_epoch_photometry

    t0 = time.perf_counter()
    epochs = read_epoch_photometry(data / "gaia_dr3" / "epoch_photometry.parquet")
    return epochs, time.perf_counter() - t0


def load_periods(epochs: pd.DataFrame) -> pd.DataFrame:
    """derive_light_curve_parameters on the real epochs, cached (the period search is slow);
    the catalogue's role in mode (a)."""
    if DERIVED.exists():
        return pd.read_parquet(DERIVED)
    from rrlfeh.lightcurve.derive import derive_light_curve_parameters

    t0 = time.perf_counter()
    derived = derive_light_curve_parameters(epochs.loc[~epochs["rejected"]].reset_index(
        drop=True), n_jobs=2)
    print(f"derived periods for {len(derived)} stars in {time.perf_counter() - t0:.0f} s "
          f"(cached to {DERIVED}; not part of any timing below)", flush=True)
    CACHE.mkdir(exist_ok=True)
    derived.to_parquet(DERIVED)
    return derived


# ---------------------------------------------------------------------------- the model

def registry_missing(tracking_uri: str) -> str | None:
    """Why the registry cannot hold the model (a sqlite file that is not there), else None;
    checked first, as opening a missing sqlite store would create an empty one."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.exists():
            return f"no registry at {path}"
    return None


def resolve(model_uri: str) -> tuple[str, str]:
    """(a loadable URI, a description) of a `models:/name@alias` (the version it points to)."""
    import mlflow

    if model_uri.startswith("models:/") and "@" in model_uri:
        name, alias = model_uri.removeprefix("models:/").split("@", 1)
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}", f"{model_uri} = version {version}"
    return model_uri, model_uri


def champion_settings(model_uri: str) -> dict[str, Any] | None:
    """settings.json of the registered model, None where it cannot be had."""
    import mlflow
    import yaml

    if model_uri.startswith("models:/") and registry_missing(mlflow.get_tracking_uri()):
        return None
    try:
        local = Path(mlflow.artifacts.download_artifacts(model_uri))
    except Exception:  # noqa: BLE001 - no registry, no champion: params.yaml instead
        return None
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    folder = local / flavor["artifacts"]["scoring_model"]["path"]
    return json.loads((folder / "settings.json").read_text())


def params_settings() -> dict[str, Any]:
    """The settings a model of params.yaml would carry (period ranges from the derive split)."""
    import yaml

    p = yaml.safe_load((REPO / "params.yaml").read_text())
    pre, val = p["preprocess"], p.get("validate", {})
    split = float(p["acquire"].get("derive", {}).get("split_period", 0.42))
    return {"types": ["RRab", "RRc"],
            "preprocess": {"n_points": dict(pre["n_points"]), "curves": dict(pre.get("curves",
                                                                                  {})),
                           "use_mag_error": bool(pre.get("use_mag_error", False))},
            "derive": dict(p["acquire"].get("derive", {})),
            "domain": {"min_epochs": val.get("min_epochs"),
                       "max_amplitude": val.get("max_amplitude"),
                       "period_range": {"RRab": [split, 1.0], "RRc": [0.2, split]}},
            "needs_period": True,
            "batch_size": int(p.get("register", {}).get("batch_size", 4096))}


def synthetic_model(dest: Path, model_uri: str, n_members: int) -> tuple[str, str]:
    """A pyfunc like the registered one, with `n_members` untrained members of the paper
    network (NetworkSpec()) per type; (its path, a description)."""
    import keras
    import mlflow

    from rrlfeh.preprocess.network_input import CHANNELS
    from rrlfeh.serving.pyfunc import ARTIFACT, RRLFehModel, signature
    from rrlfeh.training.model import NetworkSpec, build_model

    settings = champion_settings(model_uri)
    origin = f"the settings of {model_uri}"
    if settings is None:
        settings, origin = params_settings(), "settings from params.yaml (no champion found)"
    spec = NetworkSpec()
    folder = dest / "scoring_model"
    for kind in settings["types"]:
        shape = [int(settings["preprocess"]["n_points"][kind]), 2]
        out = folder / "ensembles" / kind
        out.mkdir(parents=True)
        names = [f"r{r}_k{k}.keras" for r in (1, 2) for k in range(1, 6)][:n_members]
        names += [f"r3_k{k}.keras" for k in range(1, n_members - len(names) + 1)]
        for i, name in enumerate(names):
            keras.utils.set_random_seed(i)
            build_model(shape, spec).save(out / name)
        (out / "manifest.json").write_text(json.dumps({
            "rr_type": kind, "strategy": "ensemble", "members": names, "input_shape": shape,
            "channels": list(CHANNELS), "phase_grid": None, "network": spec.as_dict(),
            "residual_sigma": 0.2, "synthetic": True}, indent=1))
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    path = dest / "pyfunc"
    mlflow.pyfunc.save_model(str(path), python_model=RRLFehModel(),
                             artifacts={ARTIFACT: str(folder)}, signature=signature(),
                             pip_requirements=[f"mlflow=={mlflow.__version__}"])
    return str(path), (f"synthetic: {n_members} untrained members of GRU {spec.units} per type "
                       f"({', '.join(settings['types'])}), {origin}")


def describe_ensembles(scoring_model) -> str:
    parts = []
    for kind, ens in scoring_model.ensembles.items():
        units = [layer.units for layer in ens.models[0].layers
                 if type(layer).__name__ == "GRU"]
        parts.append(f"{kind} {len(ens.models)} members, GRU units {units}, input "
                     f"{tuple(ens.input_shape)}, stacked engine "
                     f"{'yes' if ens.stacked() is not None else 'no (Keras fused)'}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------- timing the pyfunc

class Timers:
    """Seconds spent in patched functions (module attributes looked up at call time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []
        self.arrays: dict[int, list[np.ndarray]] = defaultdict(list)
        self.stash = False
        self.gc_seconds = 0.0  # Python's full (generation 2) garbage collections
        self.gc_count = 0
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc)
        self._undo.append(lambda: gc.callbacks.remove(self._gc))

    def _gc(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._gc_t0
            self.gc_count += 1

    def patch(self, owner: Any, name: str, label: str, keep_arrays: bool = False) -> None:
        original = getattr(owner, name, None)
        if original is None:  # renamed since: that part is counted in "other"
            print(f"(not timed separately: {getattr(owner, '__name__', owner)}.{name} is gone)")
            return

        def timed(*args, **kwargs):
            if keep_arrays and self.stash:
                self.arrays[id(args[0])].append(np.asarray(args[1]))
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - t0

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def reset(self) -> None:
        self.seconds.clear()
        self.gc_seconds, self.gc_count = 0.0, 0

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument() -> Timers:
    """Time the pipeline's parts inside the pyfunc (the same objects it calls)."""
    import rrlfeh.preprocess as pre
    import rrlfeh.serving.pipeline as pipeline
    import rrlfeh.serving.pyfunc as pyfunc
    from rrlfeh.training.ensemble import Ensemble

    timers = Timers()
    timers.patch(pyfunc, "read_request", "read_request (input checks)")
    timers.patch(pipeline, "_derive", "derive (period search)")
    timers.patch(pre, "preprocess_light_curves", "preprocess (fold, spline, resample)")
    timers.patch(pre, "network_input", "network input")
    timers.patch(Ensemble, "predict", "ensemble (Ensemble.predict, fused=True)",
                 keep_arrays=True)
    return timers


def star_chunks(epochs: pd.DataFrame, ids: np.ndarray, size: int):
    """Epoch rows of `ids` (a sorted selection) in chunks of `size` whole stars."""
    sid = epochs["source_id"].to_numpy()
    for i in range(0, len(ids), size):
        part = ids[i:i + size]
        yield epochs.iloc[np.flatnonzero(np.isin(sid, part))]


def score_mode(model, epochs: pd.DataFrame, stars: pd.DataFrame, ids: np.ndarray,
               chunk_stars: int, timers: Timers, params: dict | None = None
               ) -> dict[str, Any]:
    """Score `ids` chunk by chunk as the score stage does; seconds of each part."""
    from rrlfeh.serving.inputs import request_frame

    timers.reset()
    cut = join = predict = 0.0
    per_chunk, outs = [], []
    t0 = time.perf_counter()
    chunks = star_chunks(epochs, ids, chunk_stars)
    while True:
        t = time.perf_counter()
        chunk = next(chunks, None)
        cut += time.perf_counter() - t
        if chunk is None:
            break
        t = time.perf_counter()
        frame = request_frame(chunk, stars)
        join += time.perf_counter() - t
        t = time.perf_counter()
        outs.append(model.predict(frame, params=params) if params else model.predict(frame))
        per_chunk.append(time.perf_counter() - t)
        predict += per_chunk[-1]
    out = pd.concat(outs, ignore_index=True)
    return {"n": len(ids), "out": out, "cut": cut, "join": join, "predict": predict,
            "per_chunk": per_chunk, "parts": dict(timers.seconds),
            "gc": (timers.gc_count, timers.gc_seconds), "wall": time.perf_counter() - t0}


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


# ---------------------------------------------------------------------------- bare ensemble

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


# ---------------------------------------------------------------------------- serving

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_star_bodies(frame: pd.DataFrame, n: int) -> list[bytes]:
    """JSON dataframe_split bodies of one star each (its clean epochs, period, epoch, type)."""
    clean = frame.loc[~frame["rejected"].to_numpy(bool)].drop(columns="rejected")
    bodies = []
    for _, g in clean.groupby("source_id", sort=False):
        split = json.loads(g.to_json(orient="split", index=False))
        bodies.append(json.dumps({"dataframe_split": split}).encode())
        if len(bodies) >= n:
            break
    return bodies


def post(url: str, body: bytes, timeout: float = 120.0) -> tuple[float, bool, str]:
    """(seconds, status 'ok' for the star, error text)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
        dt = time.perf_counter() - t0
        rows = answer.get("predictions", [])
        return dt, bool(rows) and all(r.get("status") == "ok" for r in rows), ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return time.perf_counter() - t0, False, f"{type(exc).__name__}: {str(exc)[:120]}"


def serve(uri: str, tracking_uri: str, bodies: list[bytes], args) -> None:
    """Start `mlflow models serve`, time one-star requests and concurrent clients, stop it."""
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)]
    log_path = Path(tempfile.mkstemp(prefix="rrlfeh-serve-", suffix=".log")[1])
    print(f"\n4. serving: {' '.join(cmd[1:])} (log {log_path})", flush=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                print(f"  the server exited ({proc.returncode}) before answering /ping:\n{tail}")
                return
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.perf_counter() - t0 > args.serve_timeout:
                print(f"  no answer to /ping after {args.serve_timeout} s; giving up")
                return
            time.sleep(0.5)
        print(f"  /ping answered after {time.perf_counter() - t0:.1f} s "
              f"({args.workers} worker(s))", flush=True)
        url = f"{base}/invocations"
        first = [post(url, b) for b in bodies[:3]]  # load, tracing, XLA compiles
        print("  first requests (warm-up, left out): "
              + ", ".join(f"{dt * 1000:.0f} ms" for dt, _, _ in first)
              + ("" if all(ok for _, ok, _ in first) else
                 f"; not ok: {[e for _, ok, e in first if not ok][:1]}"))
        lat, n_ok = [], 0
        for i in range(args.latency_requests):
            dt, ok, _ = post(url, bodies[i % len(bodies)])
            lat.append(dt)
            n_ok += ok
        lat_ms = np.array(lat) * 1000
        print(f"  one-star requests, one at a time ({len(lat)}): p50 "
              f"{np.percentile(lat_ms, 50):.1f} ms, p95 {np.percentile(lat_ms, 95):.1f} ms, "
              f"max {lat_ms.max():.0f} ms; {n_ok} answered with status ok")
        concurrent(url, bodies, args)
    finally:
        stop(proc)


def concurrent(url: str, bodies: list[bytes], args) -> None:
    """`args.clients` threads sending one-star requests until `args.concurrent_requests` are
    done or `args.concurrent_seconds` have passed."""
    lock = threading.Lock()
    state = {"next": 0}
    lat: list[float] = []
    errors: list[str] = []
    n_ok = [0]
    t_end = time.perf_counter() + args.concurrent_seconds

    def client() -> None:
        while True:
            with lock:
                i = state["next"]
                if i >= args.concurrent_requests or time.perf_counter() > t_end:
                    return
                state["next"] = i + 1
            dt, ok, err = post(url, bodies[i % len(bodies)])
            with lock:
                lat.append(dt)
                n_ok[0] += ok
                if err:
                    errors.append(err)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.concurrent_seconds + 150)
    wall = time.perf_counter() - t0
    done = len(lat)
    lat_ms = np.array(lat or [np.nan]) * 1000
    print(f"  {args.clients} concurrent clients, one-star requests: {done} done in {wall:.1f} s "
          f"(bounds {args.concurrent_requests} requests, {args.concurrent_seconds:.0f} s) -> "
          f"{done / wall:,.1f} requests/s = {n_ok[0] / wall:,.1f} stars/s scored ok; "
          f"latency p50 {np.nanpercentile(lat_ms, 50):.0f} ms, p95 "
          f"{np.nanpercentile(lat_ms, 95):.0f} ms; {len(errors)} errors"
          + (f" (first: {errors[0]})" if errors else ""))


def stop(proc: subprocess.Popen) -> None:
    """End the server and its workers (its own process group, started above)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    print("  server stopped")


# ---------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RRLFEH_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--n-stars", type=int, default=9999,
                        help="the first N stars of the file (by source_id)")
    parser.add_argument("--raw-stars", type=int, default=1000,
                        help="stars of mode (b), raw curves (period search in the pyfunc)")
    parser.add_argument("--chunk-stars", type=int, default=2000,
                        help="stars per predict call (the score stage's chunk_stars)")
    parser.add_argument("--ensemble", choices=("champion", "synthetic"), default="champion")
    parser.add_argument("--synthetic-members", type=int, default=10)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'mlflow.db'}")
    parser.add_argument("--model-uri", default="models:/rrl-feh@champion")
    parser.add_argument("--batches", default="1024,4096,16384",
                        help="batch sizes of the bare ensemble engines")
    parser.add_argument("--skip-ensemble", action="store_true", help="leave out part 2")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after loading the model and data (what the pyfunc's "
                             "load_context could do): full collections then skip those objects")
    parser.add_argument("--workers", type=int, default=1, help="server workers")
    parser.add_argument("--serve-timeout", type=float, default=240.0)
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--concurrent-requests", type=int, default=1000)
    parser.add_argument("--concurrent-seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    print(f"machine: {describe_machine()}", flush=True)
    print(versions())
    tmp = Path(tempfile.mkdtemp(prefix="rrlfeh-score-bench-"))
    try:
        run_all(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmachine at the end: {describe_machine()}")


def run_all(args, tmp: Path) -> None:
    import mlflow

    t_start = time.perf_counter()
    if args.ensemble == "synthetic":
        uri, what = synthetic_model(tmp, args.model_uri, args.synthetic_members)
    else:
        missing = registry_missing(args.tracking_uri) if args.model_uri.startswith(
            "models:/") else None
        if missing:
            raise SystemExit(f"{missing}: register a model first (dvc repro register), give "
                             "--tracking-uri, or use --ensemble synthetic")
        uri, what = resolve(args.model_uri)
    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    t_load = time.perf_counter() - t0
    scoring = model.unwrap_python_model().model
    print(f"model: {what}; loaded in {t_load:.1f} s")
    print(f"  ensembles: {describe_ensembles(scoring)}")

    epochs, t_read = load_epochs(args.data)
    all_ids = np.unique(epochs["source_id"].to_numpy())
    derived = load_periods(epochs)
    ids = all_ids[: args.n_stars]
    known = derived.loc[derived["fit_ok"], ["source_id", "period", "epoch_max", "type"]]
    cat_ids = ids[np.isin(ids, known["source_id"].to_numpy())]
    print(f"data: {len(all_ids):,} stars, {len(epochs):,} epoch rows in {args.data} (read with "
          f"the layout reader in {t_read:.2f} s); using the first {len(ids):,} stars, "
          f"{len(cat_ids):,} with a period from the cache (mode a)")

    objects = len(gc.get_objects())
    t0 = time.perf_counter()
    gc.collect()
    print(f"a full garbage collection of this process ({objects:,} objects tracked) takes "
          f"{time.perf_counter() - t0:.2f} s", end="")
    if args.gc_freeze:
        gc.freeze()
        t0 = time.perf_counter()
        gc.collect()
        print(f"; after gc.freeze() (--gc-freeze) {time.perf_counter() - t0:.3f} s", end="")
    print()
    timers = instrument()
    try:
        # warm-up on the first chunk: tracing, the XLA compiles of its batch shapes, imports
        # (once per process: the score stage pays them on its first chunk); left out
        t0 = time.perf_counter()
        warm = score_mode(model, epochs, known, cat_ids[: args.chunk_stars], args.chunk_stars,
                          timers)
        print(f"warm-up: predict of the first chunk ({warm['n']:,} stars) "
              f"{time.perf_counter() - t0:.1f} s, left out (tracing, XLA compiles)", flush=True)

        print(f"\n1. end to end, pyfunc predict in chunks of {args.chunk_stars} stars")
        timers.stash = True
        a = score_mode(model, epochs, known, cat_ids, args.chunk_stars, timers)
        timers.stash = False
        print_mode("(a) period, epoch of maximum, type given (the goal's mode)", a)
        raw_ids = ids[: args.raw_stars]
        empty = pd.DataFrame({"source_id": pd.Series(dtype=np.int64),
                              "period": pd.Series(dtype=float),
                              "epoch_max": pd.Series(dtype=float),
                              "type": pd.Series(dtype=object)})
        b = score_mode(model, epochs, empty, raw_ids, args.chunk_stars, timers,
                       params={"derive_n_jobs": 2})
        print_mode(f"(b) raw curves, the first {len(raw_ids):,} stars (a subset), derived in "
                   "the pyfunc with derive_n_jobs=2", b)
    finally:
        timers.restore()

    results: list[dict[str, Any]] = []
    if not args.skip_ensemble:
        batches = [int(v) for v in args.batches.split(",") if v.strip()]
        print("\n2. the bare ensemble on the arrays of (a) (member predictions; max|diff| "
              "against the member loop)")
        for kind, ens in scoring.ensembles.items():
            arrays = timers.arrays.get(id(ens))
            if arrays:
                bench_ensemble(kind, ens, np.concatenate(arrays), batches, results)

    print_breakdown(a, b, t_read, epochs["source_id"].nunique(), results)

    if not args.skip_serving:
        from rrlfeh.serving.inputs import request_frame

        first = next(star_chunks(epochs, cat_ids, max(args.latency_requests, 50)))
        bodies = one_star_bodies(request_frame(first, known), args.latency_requests)
        serve(uri, args.tracking_uri, bodies, args)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")


def print_breakdown(a: dict[str, Any], b: dict[str, Any], t_read: float, n_file: int,
                    results: list[dict[str, Any]]) -> None:
    """Where the time of mode (a) goes, and the goal line."""
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
    print(f"\n3. where the time goes, mode (a), {n:,} stars")
    for name, s in rows:
        print(f"  {name:66s} {s:7.2f} s {100 * s / total:5.1f} %  "
              f"({n / s:>9,.0f} curves/s alone)" if s > 0 else f"  {name:66s} {s:7.2f} s")
    print(f"  {'total':66s} {total:7.2f} s        ({n / total:>9,.0f} curves/s)")
    if b["parts"]:
        bt = b["predict"]
        print(f"  mode (b), {b['n']:,} stars: predict {bt:.2f} s, of which "
              + ", ".join(f"{k} {v:.2f} s" for k, v in b["parts"].items() if v > 0))
    best = {}
    for r in results:
        if r["diff"] <= TOLERANCE and r["curves_per_s"] > best.get(r["kind"], {}).get(
                "curves_per_s", 0):
            best[r["kind"]] = r
    for kind, r in best.items():
        print(f"  fastest bare engine within {TOLERANCE:g} dex [{kind}]: {r['engine']}, "
              f"{r['curves_per_s']:,.0f} curves/s")
    e2e = n / a["predict"]
    print(f"\nend to end, mode (a): pyfunc predict {e2e:,.0f} curves/s; with reading and "
          f"joining {n / total:,.0f} curves/s ({os.cpu_count()} cores)")
    print(f"goal >= {GOAL:,.0f} curves/s end to end on 2 cores: "
          f"{'met' if e2e >= GOAL else 'missed'} ({e2e:,.0f} curves/s, pyfunc predict, mode a)")


if __name__ == "__main__":
    main()
