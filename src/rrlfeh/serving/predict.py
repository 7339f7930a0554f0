"""`rrlfeh predict INPUT -o OUTPUT`: a user's own file of light curves through the registered
pyfunc, chunk by chunk of whole stars, with the same per-star statuses as the server."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rrlfeh.io import write_table

log = logging.getLogger(__name__)


def read_input(path: Path) -> pd.DataFrame:
    """The file as the pyfunc's input: Gaia INDIVIDUAL / RAW layouts become the long form."""
    from rrlfeh.data.layouts import read_table
    from rrlfeh.serving.inputs import read_epoch_frame

    return read_epoch_frame(read_table(path))


def star_chunks(frame: pd.DataFrame, chunk_stars: int):
    """Row blocks of `chunk_stars` whole stars each, stars in order of first appearance."""
    col = next((c for c in frame.columns if str(c).lower() == "source_id"), None)
    if col is None or frame.empty:
        yield frame
        return
    codes, _ = pd.factorize(frame[col])
    for start in range(0, int(codes.max()) + 1, chunk_stars):
        yield frame[(codes >= start) & (codes < start + chunk_stars)]


def run(input_path: Path, output: Path, model_uri: str, tracking: Mapping[str, Any], root: Path,
        *, chunk_stars: int = 2000, n_jobs: int = 1, threads: int = 1,
        processes: int = 1) -> pd.DataFrame:
    """Score every star of `input_path`; write `output` (.csv or .parquet), each row with the
    model's URI and registry version (also logged: params may point at another model);
    `threads` chunks at once (score.threads), or `processes` worker processes where there are
    more chunks than them (score.processes), `n_jobs` processes for a period search."""
    import mlflow
    from tqdm import tqdm

    from rrlfeh.serving.model_uri import load_resolved, resolve
    from rrlfeh.serving.pyfunc import RequestRejected, predict_chunks
    from rrlfeh.serving.workers import worker_count
    from rrlfeh.training.tracking import TrackingSettings

    if output.suffix.lower() not in (".csv", ".parquet"):
        raise ValueError(f"{output}: the output must be .csv or .parquet")
    frame = read_input(input_path)
    mlflow.set_tracking_uri(TrackingSettings.from_params(tracking, root).uri)
    resolved = resolve(model_uri)
    n_stars = frame["source_id"].nunique() if "source_id" in frame.columns else 0
    workers = worker_count(processes, n_stars, max(1, chunk_stars))
    # the model in this process only where it scores here (workers load their own)
    model = load_resolved(resolved) if workers == 1 else None
    log.info("predict: model %s", resolved.describe())
    parts = []
    with tqdm(total=n_stars, desc="predict", unit="star", mininterval=2.0) as bar:
        chunks = ((None, chunk) for chunk in star_chunks(frame, max(1, chunk_stars)))
        try:
            for _, out in predict_chunks(model, chunks, {"derive_n_jobs": int(n_jobs)},
                                         threads=threads, processes=workers,
                                         source=resolved.pinned):
                parts.append(out)
                bar.update(len(out))
        except RequestRejected as exc:
            raise ValueError(f"{input_path}: {exc.message}") from None
    # which model gave the numbers travels with them
    result = pd.concat(parts, ignore_index=True).assign(model_uri=resolved.uri,
                                                        model_version=resolved.version)
    write_table(result, output)
    ok = int((result["status"] == "ok").sum())
    log.info("predict: %d stars from %s, %d scored (%d in the training domain), %d with a "
             "status -> %s", len(result), input_path, ok, int(result["in_domain"].sum()),
             len(result) - ok, output)
    log.info("predict: scored by %s", resolved.describe())
    return result
