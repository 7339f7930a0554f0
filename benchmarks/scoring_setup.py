"""What the scoring benchmarks share (score.py, ensemble_engines.py, serve_latency.py): their
common options, the model they score with (the registered champion, or a synthetic pyfunc with
its settings), the real Gaia DR3 G curves and their cached periods, the timing of the pyfunc's
parts and scoring in chunks as the `score` stage does. Its helpers print only what was loaded
and how long it took; the scripts print the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).parent / ".cache"
DERIVED = CACHE / "gaia_dr3_derived.parquet"  # the same cache as benchmarks/preprocess.py


# ---------------------------------------------------------------------------- options, a run

def add_options(parser: argparse.ArgumentParser) -> None:
    """The options every scoring benchmark has: the data, the stars, the model."""
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "RRLFEH_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--n-stars", type=int, default=9999,
                        help="the first N stars of the file (by source_id)")
    parser.add_argument("--ensemble", choices=("champion", "synthetic"), default="champion")
    parser.add_argument("--synthetic-members", type=int, default=10)
    parser.add_argument("--tracking-uri", default=f"sqlite:///{REPO / 'mlflow.db'}")
    parser.add_argument("--model-uri", default="models:/rrl-feh@champion")


def run_benchmark(args: argparse.Namespace, body: Callable[[argparse.Namespace, Path], None],
                  prefix: str) -> None:
    """`body(args, tmp)` between the machine's description at the start and at the end, with
    MLflow pointed at `--tracking-uri` and a temporary folder removed afterwards."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    print(f"machine: {describe_machine()}", flush=True)
    print(versions())
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        body(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmachine at the end: {describe_machine()}")


def versions() -> str:
    import keras
    import mlflow
    import tensorflow as tf

    return (f"TensorFlow {tf.__version__}, Keras {keras.__version__} "
            f"({keras.backend.backend()}), MLflow {mlflow.__version__}")


# ---------------------------------------------------------------------------- the model

def model_uri(args: argparse.Namespace, tmp: Path) -> tuple[str, str]:
    """(a loadable URI, a description) of the model `--ensemble` asks for; a synthetic one is
    saved under `tmp`."""
    if args.ensemble == "synthetic":
        return synthetic_model(tmp, args.model_uri, args.synthetic_members)
    missing = registry_missing(args.tracking_uri) if args.model_uri.startswith(
        "models:/") else None
    if missing:
        raise SystemExit(f"{missing}: register a model first (dvc repro register), give "
                         "--tracking-uri, or use --ensemble synthetic")
    return resolve(args.model_uri)


def load_model(uri: str, what: str):
    """The pyfunc at `uri`, loaded in this process (printed: what it is, how long it took)."""
    import mlflow

    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    t_load = time.perf_counter() - t0
    print(f"model: {what}; loaded in {t_load:.1f} s")
    print(f"  ensembles: {describe_ensembles(model.unwrap_python_model().model)}")
    return model


def with_spline_chunk(uri: str, chunk_size: int, tmp: Path) -> str:
    """A local copy of the model at `uri` whose settings carry the spline's `chunk_size`
    (preprocess.curves.chunk_size: what a model trained with params.yaml now carries; the same
    numbers, benchmarks/chunk_sizes.py), for this process and any worker process alike."""
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp / "model")))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    path = local / flavor["artifacts"]["scoring_model"]["path"] / "settings.json"
    settings = json.loads(path.read_text())
    settings["preprocess"].setdefault("curves", {})["chunk_size"] = int(chunk_size)
    path.write_text(json.dumps(settings, indent=1))
    return str(local)


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


# ---------------------------------------------------------------------------- the data

@dataclass
class Curves:
    """The real epochs, the seconds it took to read them, the first `--n-stars` stars (`ids`),
    the per-star values of the derived periods (`known`, the catalogue's role) and those of
    `ids` that have one (`cat_ids`, mode (a))."""

    epochs: pd.DataFrame
    t_read: float
    ids: np.ndarray
    known: pd.DataFrame
    cat_ids: np.ndarray


def load_curves(args: argparse.Namespace) -> Curves:
    """The real curves of `--data` and their periods (printed: how many, how long)."""
    epochs, t_read = load_epochs(args.data)
    all_ids = np.unique(epochs["source_id"].to_numpy())
    derived = load_periods(epochs)
    ids = all_ids[: args.n_stars]
    known = derived.loc[derived["fit_ok"], ["source_id", "period", "epoch_max", "type"]]
    cat_ids = ids[np.isin(ids, known["source_id"].to_numpy())]
    print(f"data: {len(all_ids):,} stars, {len(epochs):,} epoch rows in {args.data} (read with "
          f"the layout reader in {t_read:.2f} s); using the first {len(ids):,} stars, "
          f"{len(cat_ids):,} with a period from the cache (mode a)")
    return Curves(epochs, t_read, ids, known, cat_ids)


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


def star_chunks(epochs: pd.DataFrame, ids: np.ndarray, size: int):
    """Epoch rows of `ids` (a sorted selection) in chunks of `size` whole stars."""
    sid = epochs["source_id"].to_numpy()
    for i in range(0, len(ids), size):
        part = ids[i:i + size]
        yield epochs.iloc[np.flatnonzero(np.isin(sid, part))]


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
        """Time `owner.name` under `label`; with `keep_arrays`, keep its second argument (the
        curves of an `Ensemble.predict`, by ensemble) while `stash` is set."""
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


def score_mode(model, epochs: pd.DataFrame, stars: pd.DataFrame, ids: np.ndarray,
               chunk_stars: int, timers: Timers, params: dict | None = None,
               threads: int = 1, pool: Any = None, processes: int = 1) -> dict[str, Any]:
    """Score `ids` chunk by chunk as the score stage does; seconds of each part. With
    `threads` > 1, `threads` chunks at once through the stage's own `predict_chunks`; with a
    `pool` of `processes` workers (`serving.workers.worker_pool`, started before), through
    theirs (the parts then run in the workers, untimed). Then "predict" is the wall time of
    the whole loop, cutting and joining included (they overlap the scoring), and the parts'
    seconds add up over the threads."""
    from rrlfeh.serving.inputs import request_frame
    from rrlfeh.serving.pyfunc import predict_chunks
    from rrlfeh.serving.workers import predict_in_processes

    timers.reset()
    cut = join = 0.0
    per_chunk, outs = [], []
    t0 = time.perf_counter()

    def frames():
        nonlocal cut, join
        chunks = star_chunks(epochs, ids, chunk_stars)
        while True:
            t = time.perf_counter()
            chunk = next(chunks, None)
            cut += time.perf_counter() - t
            if chunk is None:
                return
            t = time.perf_counter()
            frame = request_frame(chunk, stars)
            join += time.perf_counter() - t
            yield time.perf_counter(), frame

    scored = (predict_in_processes("", frames(), params, processes, pool=pool) if pool
              else predict_chunks(model, frames(), params, threads=threads))
    for started, out in scored:
        outs.append(out)  # as `rrlfeh score` calls it
        per_chunk.append(time.perf_counter() - started)
    wall = time.perf_counter() - t0
    predict = wall if threads > 1 or pool else sum(per_chunk)
    out = pd.concat(outs, ignore_index=True)
    return {"n": len(ids), "out": out, "cut": cut, "join": join, "predict": predict,
            "per_chunk": per_chunk, "parts": dict(timers.seconds),
            "gc": (timers.gc_count, timers.gc_seconds), "wall": wall, "threads": threads,
            "processes": processes if pool else 1}
