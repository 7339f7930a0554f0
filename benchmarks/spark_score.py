"""Throughput of scoring on Spark (local[2], rrlfeh.serving.spark) against in-process scoring.

The same stars both ways: data/raw of an already-run project (default: this repository, whose
`make repro` leaves 3,000 synthetic stars and a registered champion), the first `--n-stars`,
each `--copies` times under new ids.

1. In process (the `score` stage's local engine): `mlflow.pyfunc.load_model(uri).predict` on
   `request_frame` chunks of `--chunk-stars` whole stars; the load is timed apart.
2. Spark, cold: `score_raw` end to end in a fresh process state (JVM start, the adapter model
   saved, each task loading the model, packing, scoring, collecting to the driver).
3. Spark, warm: the same again in the same process (the JVM already up), `--repeats` times.

Both use the machine's cores (TensorFlow's threads in process; two Spark tasks, one Python worker
each, for local[2]). Prints figures and a JSON line; checks that Spark's numbers equal the
in-process ones (max |difference| of feh, feh_std; statuses) and asserts nothing else.

    .venv/bin/python benchmarks/spark_score.py [--project DIR] [--n-stars 3000] [--copies 1]
        [--master local[2]] [--stars-per-batch 1000] [--chunk-stars 2000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import describe_machine

REPO = Path(__file__).resolve().parents[1]


def subset_raw(project: Path, n_stars: int, copies: int, dest: Path) -> Path:
    """data/raw's stars.parquet and epochs.parquet cut to the first `n_stars` stars, each star
    `copies` times under new ids (for more stars than the project has)."""
    dest.mkdir(parents=True)
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    epochs = pd.read_parquet(project / "data/raw/epochs.parquet")
    keep = epochs["source_id"].drop_duplicates().to_numpy()[:n_stars]
    epochs, stars = epochs[epochs["source_id"].isin(keep)], stars[stars["source_id"].isin(keep)]
    if copies > 1:
        base = 2**59  # ids below it, then one block of 2**59 a copy (copies <= 15)
        assert stars["source_id"].nunique() == (stars["source_id"] % base).nunique()
        epochs = pd.concat([epochs.assign(source_id=epochs["source_id"] % base + k * base)
                            for k in range(copies)], ignore_index=True)
        stars = pd.concat([stars.assign(source_id=stars["source_id"] % base + k * base)
                           for k in range(copies)], ignore_index=True)
    epochs.sort_values("source_id", kind="stable").to_parquet(dest / "epochs.parquet")
    stars.to_parquet(dest / "stars.parquet")
    return dest


def in_process(raw: Path, uri: str, chunk_stars: int) -> tuple[pd.DataFrame, float, float]:
    """(result, seconds to load the model, seconds to score every star) as the local engine."""
    import mlflow

    from rrlfeh.serving.inputs import request_frame
    from rrlfeh.stages.score import epoch_chunks

    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    t_load = time.perf_counter() - t0
    stars = pd.read_parquet(raw / "stars.parquet")
    t0 = time.perf_counter()
    parts = [model.predict(request_frame(chunk, stars))
             for chunk in epoch_chunks(raw / "epochs.parquet", chunk_stars)]
    return pd.concat(parts, ignore_index=True), t_load, time.perf_counter() - t0


def compare(spark: pd.DataFrame, ref: pd.DataFrame) -> dict[str, float | int]:
    """Max |difference| of feh and feh_std, stars with another status, stars not once."""
    s = spark.set_index("source_id").loc[ref["source_id"]]
    r = ref.set_index("source_id")
    out: dict[str, float | int] = {}
    for col in ("feh", "feh_std"):
        d = np.abs(s[col].to_numpy(float) - r[col].to_numpy(float))
        out[f"max_abs_diff_{col}"] = float(np.nanmax(d)) if np.isfinite(d).any() else 0.0
    out["status_mismatches"] = int((s["status"].to_numpy() != r["status"].to_numpy()).sum())
    out["stars_not_once"] = int(len(spark) - spark["source_id"].nunique()
                                + len(set(ref["source_id"]) ^ set(spark["source_id"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, default=REPO, help="an already-run project")
    ap.add_argument("--n-stars", type=int, default=3000)
    ap.add_argument("--copies", type=int, default=1, help="each star this many times (<= 15)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--stars-per-batch", type=int, default=1000)
    ap.add_argument("--chunk-stars", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2, help="warm Spark runs")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging

    import mlflow

    from rrlfeh.serving.spark import SparkSettings, resolve, score_raw

    logging.getLogger("mlflow").setLevel(logging.WARNING)

    project = args.project.resolve()
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    uri, version = resolve("models:/rrl-feh@champion")
    print(f"machine: {describe_machine()}; python {sys.version.split()[0]}")
    settings = SparkSettings(master=args.master, partitions=0,
                             stars_per_batch=args.stars_per_batch, log_level="ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="spark-bench-"))
    try:
        raw = subset_raw(project, args.n_stars, args.copies, tmp / "raw")
        n_epochs = len(pd.read_parquet(raw / "epochs.parquet", columns=["source_id"]))
        ref, t_load, t_local = in_process(raw, uri, args.chunk_stars)
        n = len(ref)
        print(f"stars: {n} ({n_epochs} epoch rows) of {project}/data/raw; model {uri}")
        print(f"in process: {n / t_local:8.1f} stars/s ({t_local:.1f} s scoring; "
              f"+{t_load:.1f} s to load the model)")
        t0 = time.perf_counter()
        got = score_raw(raw, uri, settings)
        t_cold = time.perf_counter() - t0
        print(f"spark {args.master} cold: {n / t_cold:8.1f} stars/s ({t_cold:.1f} s end to end, "
              "JVM start included)")
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            got = score_raw(raw, uri, settings)
            warm.append(time.perf_counter() - t0)
        t_warm = min(warm) if warm else float("nan")
        print(f"spark {args.master} warm: {n / t_warm:8.1f} stars/s (best of {len(warm)}: "
              f"{t_warm:.1f} s, the JVM already up)")
        same = compare(got, ref)
        print(f"spark vs in process: max |d feh| {same['max_abs_diff_feh']:.2e} dex, "
              f"max |d feh_std| {same['max_abs_diff_feh_std']:.2e} dex, "
              f"{same['status_mismatches']} status mismatches, "
              f"{same['stars_not_once']} stars not exactly once")
        print(json.dumps({
            "benchmark": "spark_score", "stars": n, "copies": args.copies,
            "epoch_rows": n_epochs,
            "model": uri, "model_version": version, "master": args.master,
            "stars_per_batch": args.stars_per_batch, "chunk_stars": args.chunk_stars,
            "in_process_stars_per_s": round(n / t_local, 1),
            "in_process_load_s": round(t_load, 2),
            "spark_cold_stars_per_s": round(n / t_cold, 1), "spark_cold_s": round(t_cold, 2),
            "spark_warm_stars_per_s": round(n / t_warm, 1), "spark_warm_s": round(t_warm, 2),
            **same, "machine": describe_machine()}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
