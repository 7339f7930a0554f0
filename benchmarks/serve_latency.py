"""Latency of one-star requests, one at a time, to the real `mlflow models serve` of the scoring
model, on real Gaia DR3 curves.

Serves the model of `--ensemble` (the registered champion, or the synthetic pyfunc of
benchmarks/score.py) with `mlflow models serve --env-manager local` (`--workers` worker
processes) on 127.0.0.1, and sends it one star a request (its clean G epochs from the shared
data, with period, epoch of maximum and type from the cached derived periods, as mode (a) of
benchmarks/score.py), one request at a time: the first 3 are left out (model loading, tracing,
XLA compiles), then p50/p95/max latency of `--latency-requests` requests and how many came back
with status ok. Concurrent clients (throughput, latency under load, memory) are
benchmarks/serve_load.py. Asserts nothing. The machine is shared: the load average is printed
at the start and the end.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/serve_latency.py
        [--ensemble champion|synthetic] [--synthetic-members 10] [--tracking-uri URI]
        [--model-uri URI] [--workers 1] [--serve-timeout 240] [--latency-requests 200]
        [--n-stars 9999] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from scoring_setup import add_options, load_curves, model_uri, run_benchmark, star_chunks

BIN = Path(sys.executable).parent


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
    """Start `mlflow models serve`, time one-star requests one at a time, stop it."""
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)]
    log_path = Path(tempfile.mkstemp(prefix="rrlfeh-serve-", suffix=".log")[1])
    print(f"\nserving: {' '.join(cmd[1:])} (log {log_path})", flush=True)
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
    finally:
        stop(proc)


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


def run_all(args: argparse.Namespace, tmp: Path) -> None:
    from rrlfeh.serving.inputs import request_frame

    t_start = time.perf_counter()
    uri, what = model_uri(args, tmp)
    print(f"model: {what}")
    data = load_curves(args)
    first = next(star_chunks(data.epochs, data.cat_ids, max(args.latency_requests, 50)))
    bodies = one_star_bodies(request_frame(first, data.known), args.latency_requests)
    serve(uri, args.tracking_uri, bodies, args)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    parser.add_argument("--workers", type=int, default=1, help="server workers")
    parser.add_argument("--serve-timeout", type=float, default=240.0,
                        help="seconds to wait for the server's /ping")
    parser.add_argument("--latency-requests", type=int, default=200,
                        help="one-star requests timed, one at a time (after 3 left out)")
    run_benchmark(parser.parse_args(), run_all, "rrlfeh-serve-latency-")


if __name__ == "__main__":
    main()
