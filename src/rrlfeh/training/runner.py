"""Run independent training jobs (types of a search, folds of a K-fold) on worker processes.

The paper's GRU trains on about one CPU core, so on an n-core machine n jobs at once finish about
n times sooner. Workers are spawned (TensorFlow is not fork-safe) and each is limited to its share
of the cores; with one worker, jobs run in this process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def quiet_tensorflow() -> None:
    """Hide TensorFlow's retracing notices and Keras' optimizer-state note on reloaded tuner
    checkpoints: harmless here, and they drown the progress lines."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")


def configure_worker(threads: int) -> None:
    """Logging, quiet TensorFlow and a thread budget in a worker process."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("rrlfeh").setLevel(logging.INFO)
    quiet_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def n_workers(requested: int, n_jobs: int) -> int:
    """Workers to use: `requested` (0 = one per core), never more than jobs or cores."""
    cores = os.cpu_count() or 1
    want = cores if requested <= 0 else requested
    return max(1, min(want, cores, n_jobs))


def run_jobs(func: Callable[[J], R], jobs: Iterable[J], workers: int) -> Iterator[R]:
    """Results of func(job) in completion order; a failed job raises after the others finish
    (their results are yielded first, and they have saved their own checkpoints)."""
    jobs = list(jobs)
    workers = n_workers(workers, len(jobs))
    if workers == 1:
        for job in jobs:
            yield func(job)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    errors: list[BaseException] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=configure_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(func, job) for job in jobs]
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as exc:  # keep the other workers' results
                errors.append(exc)
    if errors:
        raise errors[0]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and the Keras backend; with TensorFlow, deterministic ops make a rerun
    give the same model."""
    import keras

    keras.utils.set_random_seed(int(seed))
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


