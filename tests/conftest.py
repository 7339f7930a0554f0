"""Shared test fixtures: where the real data lives (../shared/data unless RRLFEH_SHARED_DATA)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# An xdist worker's __main__ (execnet's) has no __spec__ and no __file__, which pyspark's
# connect module (imported by Great Expectations) takes for a doctest run and sys.exit(0)s in;
# a spec named __main__ tells it otherwise, and multiprocessing's children skip re-importing it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    from importlib.machinery import ModuleSpec

    import __main__

    if getattr(__main__, "__spec__", None) is None and not hasattr(__main__, "__file__"):
        __main__.__spec__ = ModuleSpec("__main__", None)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def shared_data_dir() -> Path:
    """The real-data folder: $RRLFEH_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("RRLFEH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when the real data are not there."""
    path = shared_data_dir()
    if not (path / "gaia_dr3" / "epoch_photometry.parquet").exists():
        pytest.skip(f"real data not found at {path}")
    return path


def project_env(**extra: str) -> dict[str, str]:
    """The environment of a command run in a project copy: the venv first on PATH, and no
    MLflow store inherited from this process (`mlflow.set_tracking_uri` in a test exports
    MLFLOW_TRACKING_URI, which would send a copy's runs and versions to another store)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = project_env()
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


@contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow pointed at `uri` for the block, and the process's own store back after."""
    import mlflow

    env, before = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def load_champion(project: Path, uri: str = "models:/rrl-feh@champion"):
    """A project's registered model (`uri` in its own mlflow.db) loaded in this process."""
    import mlflow

    with tracking(f"sqlite:///{project / 'mlflow.db'}"):
        return mlflow.pyfunc.load_model(uri)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


PIPELINE_OUTPUTS = ("data/raw/", "data/validated/", "data/processed/", "data/scored/", "reports/",
                    "models/")


def clone_project(work: Path, edit_params: Callable[[dict], None]) -> Path:
    """What a clone holds (tracked files, no pipeline outputs) in `work`, its params.yaml changed
    by `edit_params`, committed as a fresh git repository (runs record the commit)."""
    for f in tracked_files():
        if f.startswith(PIPELINE_OUTPUTS):
            continue  # outputs of the pipeline: a run in the copy must make them
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, work / f)
    params = yaml.safe_load((work / "params.yaml").read_text())
    edit_params(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], work)
    run(["git", "add", "-A"], work)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "commit", "-qm",
         "clone"], work)
    return work


def smallest_budget(params: dict) -> None:
    """The least training a whole `dvc repro` can do (one Hyperband trial of one epoch, one
    repeat of 2 folds, no sparse copies, one sparse draw): for the projects whose tests look at
    what the pipeline does with their data, not at the search or the folds."""
    params["budget"] = "tiny"
    params["budgets"]["tiny"] = {"tune": {"max_epochs": 1, "factor": 2, "iterations": 1},
                                 "crossval": {"n_splits": 2, "n_repeats": 1, "max_epochs": 2,
                                              "patience": 1}}
    params["preprocess"]["augment"]["copies"] = 0
    params["sparse"]["n_draws"] = 1
    params["reference"].update(max_epochs=None, patience=None)  # the tiny budget's


# ---- projects built in the background -------------------------------------------------------
# A project's `dvc repro` on the tiny budget is mostly single-threaded Python (TensorFlow's
# tracing, MLflow, DVC), so the builds a session needs start together when its first test runs,
# the tests that need none run meanwhile (`pytest_collection_modifyitems` puts them first), and
# each build's fixture waits for its own. With pytest-xdist (`make test` runs 2 workers) the
# first worker to arrive starts each build in the folder the workers share, under a file lock;
# the build's shell writes its exit status beside its log, and every worker waits for that.

BUILD_TIMEOUT_S = 3000  # one build, with the others and the unit tests beside it
RC_FILE = "repro.rc"    # the build's exit status, written by its shell when it ends


@dataclass
class Build:
    """How to make one project (`prepare(work) -> the command`) and, once started, where."""

    prepare: Callable[[Path], list[str]]
    work: Path | None = None
    proc: subprocess.Popen | None = None  # in the process that started it

    def start(self, work: Path) -> None:
        """Prepare `work` and run the command there in its own session: log in repro.log, the
        exit status in RC_FILE once it ends."""
        work.mkdir(parents=True)
        self.work, cmd = work, self.prepare(work)
        script = f'"$@" > repro.log 2>&1; echo $? > {RC_FILE}.tmp && mv {RC_FILE}.tmp {RC_FILE}'
        self.proc = subprocess.Popen(["sh", "-c", script, "sh", *cmd], cwd=work,
                                     env=project_env(), start_new_session=True)

    def wait(self) -> Path:
        """The built project; the build's log in the failure message if it failed."""
        rc_file, end = self.work / RC_FILE, time.monotonic() + BUILD_TIMEOUT_S
        while not rc_file.exists():
            assert time.monotonic() < end, f"{self.work}: no build after {BUILD_TIMEOUT_S} s"
            time.sleep(1.0)
        rc = int(rc_file.read_text())
        text = (self.work / "repro.log").read_text()
        assert rc == 0, f"build in {self.work} failed ({rc}):\n{text[-6000:]}"
        return self.work


BUILDS: dict[str, Build] = {}


def background_build(name: str) -> Callable[[Callable[[Path], list[str]]], Build]:
    """Registers `prepare` as the build behind the fixture `name` (a test module defines the
    fixture as `return BUILDS[name].wait()`); returns the Build."""
    def register(prepare: Callable[[Path], list[str]]) -> Build:
        BUILDS[name] = Build(prepare)
        return BUILDS[name]
    return register


def _needs_build(item: pytest.Item) -> bool:
    return any(name in BUILDS for name in getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(session, config, items: list[pytest.Item]) -> None:
    """Modules whose tests need no background build first (in their order), then the others, so
    the builds run beside the first ones; a module is never split."""
    late = {item.module.__name__ for item in items if _needs_build(item) and item.module}
    items.sort(key=lambda item: getattr(item.module, "__name__", "") in late)


@pytest.fixture(scope="session", autouse=True)
def _start_builds(request, tmp_path_factory, worker_id):
    """Starts every build a collected test needs, once for all workers (the first to take the
    lock starts it in the folder they share); without xdist, stops any still running at the
    end (with xdist a build ends by itself: another worker may still be waiting for it)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    wanted = {n for item in request.session.items for n in getattr(item, "fixturenames", ())
              if n in BUILDS}
    with FileLock(str(shared / "builds.lock")):
        for name in sorted(wanted):
            work = shared / "builds" / name
            if work.exists():
                BUILDS[name].work = work  # started by another worker
            else:
                BUILDS[name].start(work)
    yield
    if worker_id != "master":
        return
    for build in BUILDS.values():
        if build.proc is not None and build.proc.poll() is None:
            os.killpg(build.proc.pid, signal.SIGTERM)


@background_build("pipeline_project")
def _pipeline_project(work: Path) -> list[str]:
    def small(params: dict) -> None:
        params["acquire"]["source"] = "synthetic"
        params["acquire"]["synthetic"]["n_stars"] = 400
        params["budget"] = "tiny"
        params["reference"].update(max_epochs=None, patience=None)  # the tiny budget's
        params["preprocess"]["augment"]["copies"] = 1  # the sparse-copy path, at half the cost
        params["sparse"]["n_draws"] = 2
        params["train"]["period_error"]["stars"] = 40

    clone_project(work, small)
    return ["dvc", "repro"]


@pytest.fixture(scope="session")
def pipeline_project() -> Path:
    """A copy of the working tree (what a clone would hold) with a small synthetic sample, after
    a real `dvc repro` on the tiny budget: trained, registered (rrl-feh@champion in its own
    mlflow.db) and scored. Shared by the tests; copy it before changing anything in it."""
    return BUILDS["pipeline_project"].wait()
