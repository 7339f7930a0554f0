"""The project's MLflow tracking store (SQLite + local artifact folder) and run bookkeeping.

Every run carries the git commit (and whether the tree was dirty), the DVC stage and the
params.yaml sections that stage reads, flattened to dotted keys, so a run in the UI can be traced
to the code and knobs that made it. MLFLOW_TRACKING_URI, when set, overrides params.yaml.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs go: tracking URI, artifact folder of new experiments, experiment name."""

    uri: str
    artifact_root: Path
    experiment: str

    @classmethod
    def from_params(cls, p: Mapping[str, Any], root: Path) -> TrackingSettings:
        """params.yaml `tracking`; relative SQLite and artifact paths are taken from `root`."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or str(p.get("uri", "sqlite:///mlflow.db"))
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = f"sqlite:///{(root / uri.removeprefix('sqlite:///')).resolve()}"
        artifacts = Path(p.get("artifact_root", "mlartifacts"))
        if not artifacts.is_absolute():
            artifacts = (root / artifacts).resolve()
        return cls(uri=uri, artifact_root=artifacts, experiment=str(p.get("experiment", "rrlfeh")))


def setup_tracking(settings: TrackingSettings) -> str:
    """Point MLflow at the store and return the experiment id (created with its artifact folder
    on first use)."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(settings.uri)
    exp = mlflow.get_experiment_by_name(settings.experiment)
    if exp is None:
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        exp_id = mlflow.create_experiment(settings.experiment,
                                          artifact_location=settings.artifact_root.as_uri())
    else:
        exp_id = exp.experiment_id
    # MLflow 3 opens an experiment without a kind on its GenAI overview; ours are training runs
    if (exp.tags if exp is not None else {}).get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


@functools.lru_cache(maxsize=64)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_md5(path: str | Path) -> str:
    """The md5 of a file's bytes: DVC 3's hash of a file (as in dvc.lock)."""
    st = os.stat(path)
    return _md5(str(path), st.st_size, st.st_mtime_ns)


def log_data_inputs(paths: Iterable[str | Path], root: Path | None = None,
                    context: str = "training") -> None:
    """Name the data files a run used (mlflow.log_input), each with its DVC hash as digest."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    base = (root or Path.cwd()).resolve()  # stages run from the repository root
    for path in paths:
        path = Path(path).resolve()
        if not path.is_file():
            continue
        name = str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
        with warnings.catch_warnings():  # two registered local sources match a file URI
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(path.as_uri())
        ds = MetaDataset(source, name=name, digest=file_md5(path))
        mlflow.log_input(ds, context=context, tags={"dvc.md5": ds.digest})


def git_tags(root: Path) -> dict[str, str]:
    """mlflow.source.git.commit and a dirty flag, when `root` is a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git_dirty": str(dirty).lower()}


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> {"a.b.c": "value"} (values as text, cut at MLflow's length limit)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log nested params flattened to dotted keys, in batches MLflow accepts."""
    import mlflow

    items = list(flatten(params, prefix).items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i:i + 100]))


@contextmanager
def stage_run(name: str, *, stage: str, root: Path, params: Mapping[str, Any],
              tags: Mapping[str, str] | None = None, run_id: str | None = None,
              inputs: Iterable[str | Path] = ()) -> Iterator[Any]:
    """A parent run of one stage (or one type of a stage): git + DVC tags, the stage's params
    and the data files it read (`inputs`). Given `run_id`, the run is resumed (a restarted
    search keeps its parent)."""
    import mlflow

    all_tags = {**git_tags(root), "dvc.stage": stage, **(tags or {})}
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name,
                          tags=all_tags) as run:
        if run_id is None:
            log_params(params)
            log_data_inputs(inputs, root)
        yield run


def log_history(history: Mapping[str, list[float]], *, run_id: str | None = None) -> None:
    """Per-epoch metrics (Keras History.history) as MLflow metric series, step = epoch."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    rid = run_id or mlflow.active_run().info.run_id
    import time
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now, step) for key, values in history.items()
               for step, v in enumerate(values) if v == v]
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
