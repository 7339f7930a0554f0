"""The real `mlflow models serve` of models:/rrl-feh@champion under load: concurrent clients on
127.0.0.1, each with its own deterministic mix of good and malformed requests
(tests/serving/load.py, the same load as tests/serving/test_server_load.py).

Prints latency p50/p95/p99 (all requests, good ones, malformed ones), throughput (requests/s and
stars/s), status counts, answers that were wrong, lost or mixed up, and the resident memory of
the server with all its processes after a warm-up round, at the end and at its peak. The run
is bounded by a request count and a wall time (it says when the time limit cut it short);
asserts nothing. The machine is shared: the load average is printed at the start and the end.

`--project` is a project folder after a run of the pipeline (data/raw, data/scored and the
champion in its mlflow.db; read only, e.g. the repository after `make repro`, or a pytest
clone); without it a tiny one is built in a temporary folder first, as tests/conftest.py's
`pipeline_project` is (a real `dvc repro`, a few minutes).

    .venv/bin/python benchmarks/serve_load.py [--project DIR] [--clients 50] [--requests 2000]
        [--seconds 120] [--per-client 12] [--malformed-every 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "serving")]

from load import LoadRun, client_plans, problems, run_load, tree_rss  # noqa: E402
from machine import describe_machine  # noqa: E402
from served import start_server, stop_server  # noqa: E402

from conftest import clone_project, run  # noqa: E402

MB = 2**20


def tiny_project(work: Path) -> Path:
    """A clone of the working tree after `dvc repro` on 400 synthetic stars, budget tiny."""
    def small(params: dict) -> None:
        params["acquire"]["source"] = "synthetic"
        params["acquire"]["synthetic"]["n_stars"] = 400
        params["budget"] = "tiny"

    print(f"building a tiny project in {work} (dvc repro, a few minutes) ...", flush=True)
    project = clone_project(work, small)
    run(["dvc", "repro"], project)
    return project


def percentiles(ms: np.ndarray) -> str:
    if not len(ms):
        return "none"
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {ms.max():.0f} ms"


def report(name: str, load: LoadRun, reference: pd.DataFrame, bounds: str) -> None:
    wrong = problems(load, reference)
    good = np.array([a.seconds * 1000 for a in load.answers if a.case.status == 200
                     and a.status is not None])
    bad = np.array([a.seconds * 1000 for a in load.answers if a.case.status != 200
                    and a.status is not None])
    n = len(load.answers)
    print(f"{name}: {n} answers to {load.sent} requests in {load.wall_s:.1f} s ({bounds}"
          f"{'; cut short by the time limit' if load.cut_short else ''})")
    print(f"  status counts {load.status_counts()}; wrong, lost or mixed-up answers: "
          f"{len(wrong) + load.sent - n}")
    for p in wrong[:5]:
        print(f"    {p}")
    stars_s = load.stars_answered() / load.wall_s
    print(f"  throughput {n / load.wall_s:.1f} requests/s, {stars_s:.1f} stars/s")
    print(f"  latency, all: {percentiles(load.latencies_ms())}")
    print(f"  latency, good ({len(good)}): {percentiles(good)}")
    print(f"  latency, malformed ({len(bad)}): {percentiles(bad)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, help="a project after a pipeline run")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000, help="at most, in all")
    parser.add_argument("--seconds", type=float, default=120.0, help="at most")
    parser.add_argument("--per-client", type=int, default=12, help="requests in a client's plan")
    parser.add_argument("--malformed-every", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rrlfeh-serve-load-") as tmp:
        project = args.project.resolve() if args.project else tiny_project(Path(tmp) / "p")
        print(f"machine: {describe_machine()}")
        reference = pd.read_parquet(project / "data" / "scored" / "catalogue.parquet"
                                    ).set_index("source_id")
        plans = client_plans(project, [int(i) for i in reference.index], args.clients,
                             args.per_client, args.malformed_every)
        n_plan = sum(len(p) for p in plans)
        n_bad = sum(c.status != 200 for p in plans for c in p)
        stars = sum(len(c.ids) for p in plans for c in p)
        print(f"project {project} ({len(reference)} stars in its catalogue); {args.clients} "
              f"clients, {n_plan} requests in their plans ({n_bad} malformed, "
              f"{stars} stars in the good ones, 1-3 a request)")
        server = start_server(project, Path(tmp) / "server.log", workers=args.workers)
        print(f"server: mlflow models serve -w {args.workers} at {server.url}, log "
              f"{server.log}", flush=True)
        try:
            warm = run_load(server.url, plans, n_plan, args.seconds, server.proc.pid)
            report("warm-up (each plan once)", warm, reference, f"bounds {n_plan} requests, "
                   f"{args.seconds:.0f} s")
            rss0 = tree_rss(server.proc.pid)
            load = run_load(server.url, plans, args.requests, args.seconds, server.proc.pid)
            rss1 = tree_rss(server.proc.pid)
            report("load", load, reference, f"bounds {args.requests} requests, "
                   f"{args.seconds:.0f} s")
            peak = max((b for _, b in load.rss), default=rss1)
            print(f"  resident memory of the server (all its processes): {rss0 / MB:.0f} MB "
                  f"after the warm-up, {rss1 / MB:.0f} MB at the end "
                  f"({(rss1 - rss0) / MB:+.1f} MB), peak {peak / MB:.0f} MB during the load")
            alive = server.proc.poll() is None
            tracebacks = server.log_tail(10_000_000).count("Traceback")
            print(f"  server still running: {alive}; tracebacks in its log: {tracebacks}")
        finally:
            stop_server(server)
        print(f"machine at the end: {describe_machine()}")


if __name__ == "__main__":
    main()
