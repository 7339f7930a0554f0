"""All of Gaia DR3 on one machine: 270,000 synthetic RR Lyrae in Gaia's RAW layout, scored.

1. write: `rrlfeh synth-raw` makes the epoch photometry (G, BP, RP; parquet parts) and the
   stars table (period, epoch_max, type, as vari_rrlyrae gives them);
2. local: `rrlfeh score --raw DATA` in process, uninterrupted (the reference numbers);
3. killed: the same from an empty cache, SIGKILLed once about half of its chunks are written;
4. resumed: the same command again, which must take the finished chunks from the cache (their
   files untouched) and score only the rest;
5. spark: `rrlfeh score --raw DATA --engine spark` (score.spark, local[2] by default).

Each step is a subprocess; printed: wall time, stars/s, the peak resident memory of its whole
process tree (sum of RSS over the tree, sampled every 0.5 s with psutil: the JVM and Spark's
Python workers included) and the load average before and after (the machine is shared). Checked
(a failure exits 1): the resumed catalogue has each star exactly once and the uninterrupted
run's numbers (feh, feh_std within 1e-9, same statuses); Spark's are compared the same way and
their largest difference printed.

The model: the default run's `models:/rrl-feh@champion` (mlflow.db of --project, this
repository by default); where there is none, a small project is built as the tests'
`pipeline_project` builds one (tests/conftest.py: a copy of the tree, 400 synthetic stars,
`dvc repro register` on the smallest budget) under WORK/project.

    .venv/bin/python benchmarks/dr3_scale.py [--stars 270000] [--work /tmp/rrlfeh-dr3]
        [--data DIR] [--project DIR] [--jobs 2] [--part-stars 10000] [--no-spark]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))


def has_champion(project: Path) -> bool:
    """Whether `project`'s mlflow.db holds `rrl-feh@champion`."""
    db = project / "mlflow.db"
    if not db.exists():
        return False
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=f"sqlite:///{db}").get_model_version_by_alias("rrl-feh",
                                                                                "champion")
    except Exception:  # noqa: BLE001 - no such model or alias
        return False
    return True


def small_project(work: Path) -> Path:
    """A project copy with a trained champion, as tests/conftest.py builds one (reused when
    WORK/project already has one)."""
    from conftest import clone_project, run, smallest_budget

    project = work / "project"
    if has_champion(project):
        return project

    def small(params: dict) -> None:
        smallest_budget(params)
        params["acquire"]["source"] = "synthetic"
        params["acquire"]["synthetic"]["n_stars"] = 400

    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    clone_project(project, small)
    run(["dvc", "repro", "register"], project)
    return project


class TreeMemory:
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread, and
    how it split over the processes at that moment (`parts`: kind -> bytes)."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.peak, self._stop = 0, threading.Event()
        self.parts: dict[str, int] = {}
        self._proc = psutil.Process(pid)
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
            except psutil.Error:
                return
            parts: dict[str, int] = {}
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    kind = _kind(p.cmdline())
                    parts[kind] = parts.get(kind, 0) + p.memory_info().rss
            if sum(parts.values()) > self.peak:
                self.peak, self.parts = sum(parts.values()), parts
            self._stop.wait(every_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _kind(cmdline: list[str]) -> str:
    """A process's kind for the memory split: the JVM, Spark's Python workers, the driver."""
    text = " ".join(cmdline)
    if "java" in (cmdline[0] if cmdline else ""):
        return "jvm"
    if "pyspark.daemon" in text or "pyspark.worker" in text:
        return "python workers"
    return "driver" if "rrlfeh" in text else Path(cmdline[0]).name if cmdline else "?"


def env() -> dict[str, str]:
    from conftest import project_env

    return project_env()


def step(name: str, cmd: list[str], cwd: Path, n_stars: int, results: list[dict], *,
         logs: Path, kill_when=None) -> dict:
    """Run `cmd` in `cwd` (output in logs/NAME.log), time it and sample its tree's memory;
    `kill_when()` true: SIGKILL the tree."""
    load0 = os.getloadavg()[0]
    log = logs / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=fh, stderr=subprocess.STDOUT)
        mem = TreeMemory(proc.pid)
        killed = False
        while proc.poll() is None:
            if kill_when is not None and kill_when():
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                proc.wait()
                break
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    peak = mem.stop()
    rc = proc.returncode
    if rc != 0 and not killed:
        print(log.read_text()[-3000:])
        raise SystemExit(f"{name}: exit {rc}")
    r = {"step": name, "wall_s": round(wall, 1), "stars_per_s": round(n_stars / wall, 1),
         "peak_rss_mb": round(peak / 2**20), "load_before": round(load0, 2),
         "load_after": round(os.getloadavg()[0], 2), "killed": killed}
    results.append(r)
    r["peak_split_mb"] = {k: round(v / 2**20) for k, v in mem.parts.items()}
    split = ", ".join(f"{k} {v}" for k, v in r["peak_split_mb"].items())
    print(f"  {name:8s} {wall:8.1f} s  {n_stars / wall:8.1f} stars/s  peak RSS (tree) "
          f"{peak / 2**20:7.0f} MB ({split})  load {load0:.1f} -> {r['load_after']:.1f}"
          + ("  (SIGKILLed)" if killed else ""), flush=True)
    return r


def compare(a: pd.DataFrame, b: pd.DataFrame, n_stars: int, what: str) -> float:
    """Each star once in both, the same stars and statuses; the largest |difference| of
    feh/feh_std (SystemExit on a mismatch of stars or statuses)."""
    for name, cat in (("reference", a), (what, b)):
        if cat["source_id"].duplicated().any() or len(cat) != n_stars:
            raise SystemExit(f"{what}: {name} has {len(cat)} rows, "
                             f"{cat['source_id'].nunique()} stars (expected {n_stars} once)")
    a, b = (c.sort_values("source_id", ignore_index=True) for c in (a, b))
    if not np.array_equal(a["source_id"], b["source_id"]) or not a["status"].equals(
            b["status"]):
        raise SystemExit(f"{what}: other stars or statuses than the reference")
    diff = max(float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)),
                               initial=0.0)) for c in ("feh", "feh_std"))
    same_nan = all(np.array_equal(a[c].isna(), b[c].isna()) for c in ("feh", "feh_std"))
    if not same_nan:
        raise SystemExit(f"{what}: feh is missing for other stars than in the reference")
    return diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stars", type=int, default=270_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rrlfeh-dr3"))
    ap.add_argument("--data", type=Path, default=None,
                    help="an existing `rrlfeh synth-raw` folder (step 1 then reuses it)")
    ap.add_argument("--project", type=Path, default=REPO,
                    help="project with rrl-feh@champion (default this repository; else one is "
                         "built under WORK)")
    ap.add_argument("--jobs", type=int, default=2, help="synth-raw processes")
    ap.add_argument("--part-stars", type=int, default=10_000)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--no-resume", action="store_true", help="skip steps 3-4 (kill, resume)")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    from machine import describe_machine

    print(describe_machine())
    project = args.project.resolve()
    if has_champion(project):
        print(f"model: models:/rrl-feh@champion of {project}/mlflow.db")
    else:
        print(f"no rrl-feh@champion in {project}/mlflow.db: building a small test project "
              f"(tests/conftest.py pipeline_project's way) under {work}")
        t0 = time.perf_counter()
        project = small_project(work)
        print(f"  model from {project} ({time.perf_counter() - t0:.0f} s)")
    params = project / "params.yaml"
    rrlfeh = str(BIN / "rrlfeh")
    n = args.stars
    data = (args.data or work / f"raw_{n}").resolve()
    results: list[dict] = []
    print(f"{n:,} stars -> {data}")
    step("write", [rrlfeh, "synth-raw", "--stars", str(n), "--out", str(data), "--jobs",
                   str(args.jobs), "--part-stars", str(args.part_stars)], project, n, results,
         logs=work)
    if args.data:
        print("  (an existing folder: its parts were kept, the time above is not the writing)")
    manifest = json.loads((data / "manifest.json").read_text())
    if manifest["spec"]["n_stars"] != n:
        raise SystemExit(f"{data} holds {manifest['spec']['n_stars']} stars, not {n}")
    print(f"  {manifest['n_epoch_rows']:,} transits in {manifest['n_parts']} parts, "
          f"{sum(f.stat().st_size for f in (data / 'epochs').iterdir()) / 2**30:.2f} GiB")

    import yaml

    p = yaml.safe_load(params.read_text())["score"]
    cache_root = project / p["cache_dir"]
    n_chunks = -(-n // int(p["chunk_stars"]))

    def score(out: str, *extra: str) -> list[str]:
        return [rrlfeh, "score", "--params", str(params), "--raw", str(data), "--out",
                str(work / out), *extra]

    def caches() -> set[Path]:
        return set(cache_root.glob("*")) if cache_root.exists() else set()

    before = caches()
    step("local", score("local"), project, n, results, logs=work)
    for c in caches() - before:  # the killed run must start from an empty cache
        shutil.rmtree(c)
    ref = pd.read_parquet(work / "local" / "catalogue.parquet")
    ok = bool(args.no_resume) or resume_steps(score, caches, before, project, work, n,
                                              n_chunks, ref, results)
    if not args.no_spark:
        step("spark", score("spark", "--engine", "spark"), project, n, results, logs=work)
        sdiff = compare(ref, pd.read_parquet(work / "spark" / "catalogue.parquet"), n, "spark")
        print(f"  spark catalogue: {n:,} stars, each once; max |diff| vs in-process {sdiff:.1e}")
    for c in caches() - before:
        shutil.rmtree(c)
    print(json.dumps({"stars": n, "steps": results}))
    return 0 if ok else 1


def resume_steps(score, caches, before: set[Path], project: Path, work: Path, n: int,
                 n_chunks: int, ref: pd.DataFrame, results: list[dict]) -> bool:
    """Steps 3-4: a run SIGKILLed at half its chunks, then resumed; True when the resume left
    the finished chunks untouched and gave the uninterrupted numbers (1e-9)."""
    state: dict = {}

    def half_done() -> bool:
        dirs = list(caches() - before)
        if dirs:
            state["dir"] = dirs[0]
            return len(list(dirs[0].glob("chunk_0*.parquet"))) >= max(1, n_chunks // 2)
        return False

    step("killed", score("resumed"), project, n, results, logs=work, kill_when=half_done)
    finished = {f: f.stat().st_mtime_ns for f in state["dir"].glob("chunk_*.parquet")}
    step("resumed", score("resumed"), project, n, results, logs=work)
    untouched = all(f.stat().st_mtime_ns == t for f, t in finished.items())
    log = (work / "resumed.log").read_text()
    said = [line for line in log.splitlines() if "taken from the cache" in line]
    print(f"  kill: {len(finished)} of {n_chunks} chunks finished when killed; the resume "
          f"{'left them untouched' if untouched else 'REWROTE some'}; "
          f"{said[-1].split('score: ')[-1] if said else '?'}")
    diff = compare(ref, pd.read_parquet(work / "resumed" / "catalogue.parquet"), n, "resumed")
    print(f"  resumed catalogue: {n:,} stars, each once; max |diff| feh/feh_std vs the "
          f"uninterrupted run {diff:.1e}")
    for c in caches() - before:
        shutil.rmtree(c)
    return untouched and diff <= 1e-9


if __name__ == "__main__":
    sys.exit(main())
