"""Chunks of stars scored in worker processes, each with its own copy of the registered model.

Threads of one process share its GIL: on 2 cores two chunks at once in threads gain 1.3-1.5x,
the same chunks in two processes ~1.7x (`docs/benchmarks.md`). Each worker loads the pyfunc
once from its pinned URI, as `mlflow models serve` or a Spark executor would, holds BLAS and
TensorFlow to one thread (the parallelism is the workers'), and scores one chunk at a time;
the answers come back in the chunks' order, at most `processes` + 1 chunks held.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import pandas as pd

_WORKER: dict[str, Any] = {}  # in a worker: its model and its BLAS limit (kept for its life)


def worker_count(processes: int, n_stars: int | None, chunk_stars: int) -> int:
    """The worker processes to score with: `processes` (score.processes) only for more chunks
    than workers (or an unknown count), where their start-up (the model loaded in each) pays;
    else 1 (the chunks in threads of this process)."""
    processes = int(processes)
    if processes > 1 and (n_stars is None or n_stars > processes * chunk_stars):
        return processes
    return 1


def _start(source: str, tracking_uri: str | None) -> None:
    """A worker's start: one thread for BLAS and the network, then the model from `source`."""
    from rrlfeh.logs import configure_logging

    configure_logging()  # the stage's own quiet: no TensorFlow or MLflow notes from each worker
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import mlflow
    from threadpoolctl import ThreadpoolController

    _WORKER["blas"] = ThreadpoolController().limit(limits=1, user_api="blas")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    _WORKER["model"] = mlflow.pyfunc.load_model(source)


def _score(frame: pd.DataFrame, params: dict[str, Any] | None) -> pd.DataFrame:
    from rrlfeh.serving.pyfunc import predict_frame

    return predict_frame(_WORKER["model"], frame, params)


@contextlib.contextmanager
def worker_pool(source: str, processes: int = 2, tracking_uri: str | None = None
                ) -> Iterator[ProcessPoolExecutor]:
    """`processes` spawned workers, each holding the model at `source` (a pinned models:/ URI
    under `tracking_uri`, or a local model folder), for `predict_in_processes`."""
    context = multiprocessing.get_context("spawn")  # TensorFlow's threads do not survive fork
    with ProcessPoolExecutor(max_workers=max(1, int(processes)), mp_context=context,
                             initializer=_start, initargs=(source, tracking_uri)) as pool:
        yield pool


def predict_in_processes(source: str, items: Iterable[tuple[Any, pd.DataFrame]],
                         params: dict[str, Any] | None = None, processes: int = 2,
                         tracking_uri: str | None = None, pool: ProcessPoolExecutor | None = None
                         ) -> Iterator[tuple[Any, pd.DataFrame]]:
    """(key, the pyfunc's answer) of each (key, frame) of `items`, in their order, scored by
    the workers of `pool` (`worker_pool`), or of one started here for them; at most
    `processes` + 1 frames held. `items` is read lazily in the caller."""
    if pool is None:
        with worker_pool(source, processes, tracking_uri) as own:
            yield from predict_in_processes(source, items, params, processes, pool=own)
        return
    yield from in_order(pool, _score, items, params, processes)


def in_order(pool: Executor, score: Callable[[pd.DataFrame, Any], pd.DataFrame],
             items: Iterable[tuple[Any, pd.DataFrame]], params: Any, ahead: int
             ) -> Iterator[tuple[Any, pd.DataFrame]]:
    """(key, score(frame, params)) of each (key, frame) of `items`, run on `pool` (threads or
    processes), yielded in the items' order with at most `ahead` + 1 frames submitted and not
    yet yielded: memory bounded by the chunk size. What has not started when the caller stops
    or an error comes is cancelled."""
    pending: deque = deque()
    try:
        for key, frame in items:
            pending.append((key, pool.submit(score, frame, params)))
            while len(pending) > ahead:
                done_key, future = pending.popleft()
                yield done_key, future.result()
        while pending:
            done_key, future = pending.popleft()
            yield done_key, future.result()
    finally:
        for _, future in pending:
            future.cancel()
