"""Spark as a user's cluster runs the job: a standalone master and one worker (pyspark's own
`spark-class`, on 127.0.0.1, free ports, logs in tmp), and `spark-submit --master spark://...`
in client mode as docs/using.md tells a cluster user (the module file as the job, `--model
models:/rrl-feh@champion`, the project's Python for the executors). Unlike `local[N]`, where
MLflow's spark_udf lets the executors read the driver's model folder, a `spark://` master makes
it ship the model to the executors (SparkContext.addFile of a zip): the executors here have no
registry (their MLFLOW_TRACKING_URI is unreachable) and their own temporary folder, where the
model must arrive. Every star's answer is compared with the in-process pyfunc's (1e-6).

One machine: the executor is a separate JVM with its own working and temporary folders, not
another host.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from spark_checks import assert_same_stars, raw_with_bad_stars

from rrlfeh.serving.inputs import request_frame

from conftest import BIN, REPO, load_champion, project_env


def _missing() -> str | None:
    """Why this machine cannot run a Spark cluster, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (the [spark] extra: make setup-spark)"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "no Java on this machine (Spark needs Java 17+)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None,
                                                   reason=str(_missing()))]

HOST = "127.0.0.1"
UP_TIMEOUT_S = 120
JOB_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _spark_env(**extra: str) -> dict[str, str]:
    """The project's environment (conftest.project_env) for a Spark process: pyspark's own
    SPARK_HOME, everything on the loopback."""
    import pyspark

    return project_env(SPARK_HOME=str(Path(pyspark.__file__).parent), SPARK_LOCAL_IP=HOST,
                       **extra)


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A daemon in its own process group (stopped with everything it started), output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """TERM to the process group of `proc` (the JVM and any executor or Python worker it
    launched), KILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # what it started and left behind
        os.killpg(proc.pid, signal.SIGKILL)


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen) -> re.Match:
    """The first match of `pattern` in `log` once the daemon writes it (fails with the log's
    tail when the daemon dies or UP_TIMEOUT_S pass)."""
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if m := re.search(pattern, log.read_text(errors="replace")):
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise AssertionError(f"{log.name}: no {pattern!r} (exit {proc.poll()}):\n{tail}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and one worker (2 cores, 2 GiB) on 127.0.0.1: yields (the master's
    URL, the worker's folder of application work dirs, the executors' TMPDIR). Torn down
    whatever happens, also when starting fails."""
    tmp = tmp_path_factory.mktemp("cluster")
    work, exec_tmp = tmp / "work", tmp / "executor-tmp"
    work.mkdir()
    exec_tmp.mkdir()
    props = tmp / "daemons.conf"  # no REST submission server (it would take the fixed 6066)
    props.write_text("spark.master.rest.enabled false\n")
    spark_class = str(BIN / "spark-class")
    procs: list[subprocess.Popen] = []
    try:
        master = _start([spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST,
                         "--port", str(_free_port()), "--webui-port", str(_free_port()),
                         "--properties-file", str(props)], tmp / "master.log", _spark_env())
        procs.append(master)
        url = _wait_for(tmp / "master.log", r"Starting Spark master at (spark://\S+)",
                        master).group(1)
        _wait_for(tmp / "master.log", r"I have been elected leader", master)
        # the worker's environment is its executors' (and their Python workers'): TMPDIR of
        # their own, and no MLflow store (project_env drops MLFLOW_TRACKING_URI)
        worker = _start([spark_class, "org.apache.spark.deploy.worker.Worker", url,
                         "--host", HOST, "--cores", "2", "--memory", "2g",
                         "--webui-port", str(_free_port()), "--work-dir", str(work),
                         "--properties-file", str(props)],
                        tmp / "worker.log", _spark_env(TMPDIR=str(exec_tmp)))
        procs.append(worker)
        _wait_for(tmp / "worker.log", r"Successfully registered with master", worker)
        yield url, work, exec_tmp
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="module")
def in_process(pipeline_project: Path):
    """The champion (models:/rrl-feh@champion of the session's project) loaded in this process:
    the reference."""
    return load_champion(pipeline_project)


def test_spark_submit_to_a_standalone_cluster_scores_as_the_pyfunc(pipeline_project, in_process,
                                                                     cluster, tmp_path):
    """data/raw with four bad stars as a user's epoch file (one row an epoch, per-star columns
    repeated) through `spark-submit --master spark://...` client mode: every star once, in
    input order, with the in-process pyfunc's [Fe/H], feh_std, status (1e-6); the model
    reached the executor through Spark (its zip in the executor's work dir, unpacked in the
    executor's TMPDIR), not through the registry."""
    url, work, exec_tmp = cluster
    raw = tmp_path / "raw"
    raw_with_bad_stars(pipeline_project, raw)
    frame = request_frame(pd.read_parquet(raw / "epochs.parquet"),
                          pd.read_parquet(raw / "stars.parquet"))
    frame.to_parquet(tmp_path / "epochs.parquet")
    ref = in_process.predict(frame)
    assert len(ref) == frame["source_id"].nunique() >= 400
    assert (ref["status"] != "ok").sum() >= 3  # the bad stars: statuses worth comparing

    driver_tmp = tmp_path / "driver-tmp"
    driver_tmp.mkdir()
    python = sys.executable  # the executors' Python (docs: a packed venv or the same image)
    cmd = [str(BIN / "spark-submit"), "--master", url, "--deploy-mode", "client",
           "--conf", f"spark.pyspark.python={python}",
           # the executors have no registry: any attempt to reach one fails at once
           "--conf", "spark.executorEnv.MLFLOW_TRACKING_URI=http://127.0.0.1:9",
           "--conf", "spark.executorEnv.MLFLOW_HTTP_REQUEST_MAX_RETRIES=0",
           str(REPO / "src/rrlfeh/serving/spark.py"), str(tmp_path / "epochs.parquet"),
           "-o", str(tmp_path / "feh.parquet"), "--model", "models:/rrl-feh@champion",
           "--params", str(pipeline_project / "params.yaml")]
    env = _spark_env(PYSPARK_PYTHON=python, TMPDIR=str(driver_tmp))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        _stop(proc)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    assert re.search(r"spark: \d+ stars of .* scored by models:/rrl-feh/\d+", out), out[-3000:]

    got = pd.read_parquet(tmp_path / "feh.parquet")
    assert got["source_id"].tolist() == ref["source_id"].tolist()  # input order
    assert_same_stars(got, ref)

    # the model travelled with the job: the zip MLflow added (SparkContext.addFile) in the
    # executor's work dir, unpacked by the executor's Python into its own TMPDIR
    apps = list(work.glob("app-*"))
    assert len(apps) == 1, apps
    zips = [z for z in apps[0].glob("*/*.zip") if "MLmodel" in zipfile.ZipFile(z).namelist()]
    assert zips, sorted(p.name for p in apps[0].rglob("*"))
    unpacked = [p.parent for p in exec_tmp.glob("*/MLmodel")]
    assert unpacked and all((p / "artifacts/champion/MLmodel").exists() for p in unpacked), \
        sorted(str(p.relative_to(exec_tmp)) for p in exec_tmp.rglob("*"))[:40]
