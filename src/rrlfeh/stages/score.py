"""Stage `score`: every star of data/raw scored by the registered champion, in chunks.

With `preprocess.source: folded` (e.g. DG22) the stars are those of the folded-curves file
instead, every curve of it, labelled or not, sent to the model in the folded form.

The model is `models:/rrl-feh@champion` from the registry (never models/final directly). The
epochs are streamed from data/raw/epochs.parquet (sorted by star) in chunks of whole stars, so
memory does not grow with the number of stars; each finished chunk is kept in the cache, and a
killed run resumes from the finished chunks. Another data/raw-like folder (`rrlfeh score --raw`)
may hold its epochs as a folder of parquet parts (each sorted by star, a star whole in one part)
and in Gaia's RAW layout (e.g. `rrlfeh synth-raw`), read as the pipeline reads it; on Spark such
an input is scored `score.spark_chunk_stars` stars a job, each job's result kept as a chunk.
The catalogue holds each star exactly once: labelled or not, kept or cut by `validate`, and
stars `acquire` set aside (with their reason).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.io import write_json, write_parquet
from rrlfeh.serving.inputs import request_frame
from rrlfeh.serving.model_uri import load_resolved, model_uuid, resolve

log = logging.getLogger(__name__)

STAR_FIELDS = ("source_id", "period", "epoch_max", "type")


EPOCH_FIELDS = ["source_id", "time", "mag", "flux", "flux_error", "rejected"]


def epoch_files(raw_dir: Path) -> list[Path]:
    """The epoch parquet files of a data/raw-like folder: epochs.parquet (a file, or a folder of
    parts), else the parts in epochs/ (FileNotFoundError naming the folder when neither)."""
    for name in ("epochs.parquet", "epochs"):
        path = raw_dir / name
        if path.is_file():
            return [path]
        if path.is_dir():
            parts = sorted(f for f in path.glob("*.parquet")
                           if f.is_file() and not f.name.startswith((".", "_")))
            if not parts:
                raise FileNotFoundError(f"{path}: a folder without parquet parts")
            return parts
    raise FileNotFoundError(f"{raw_dir}: no epochs.parquet (file or folder of parts) and no "
                            "epochs/ folder of parquet parts")


def is_gaia_raw(path: Path) -> bool:
    """Whether a parquet file of epochs is in Gaia's RAW layout (exploded: g_transit_time ...)
    rather than the canonical one (schema.EPOCHS, as `acquire` writes data/raw)."""
    import pyarrow.parquet as pq

    return "g_transit_time" in pq.read_schema(path).names


def epoch_chunks(path: Path | Sequence[Path], chunk_stars: int, batch_rows: int = 200_000
                 ) -> Iterator[pd.DataFrame]:
    """Canonical G epoch rows (EPOCH_FIELDS) in chunks of `chunk_stars` whole stars, read batch
    by batch from one file or a list of parts, each sorted by source_id (ValueError naming the
    file otherwise; a star must be whole in one part). Parts in Gaia's RAW layout are read as
    the pipeline reads them (`layouts.to_epochs`, band G), a chunk at a time."""
    import pyarrow.parquet as pq

    from rrlfeh.data.layouts import RAW_COLUMNS, to_epochs

    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    raw = bool(paths) and is_gaia_raw(paths[0])

    def done(rows: pd.DataFrame) -> pd.DataFrame:
        if not raw:
            return rows.reset_index(drop=True)
        return to_epochs(rows, "raw")[EPOCH_FIELDS].reset_index(drop=True)

    pending: list[pd.DataFrame] = []
    n_pending, prev = 0, None   # whole or started stars pending; the last row's star
    for file in paths:
        if is_gaia_raw(file) != raw:
            raise ValueError(f"{file}: epoch parts in two layouts (Gaia RAW and canonical)")
        last = None
        for batch in pq.ParquetFile(file).iter_batches(
                batch_size=batch_rows, columns=list(RAW_COLUMNS) if raw else EPOCH_FIELDS):
            df = batch.to_pandas()
            sid = df["source_id"].to_numpy()
            if not len(sid):
                continue
            if (last is not None and sid[0] < last) or np.any(np.diff(sid) < 0):
                raise ValueError(f"{file}: epochs are not sorted by source_id (rerun `rrlfeh "
                                 "acquire`, which writes them star by star)")
            last = sid[-1]
            n_pending += int(np.count_nonzero(sid[1:] != sid[:-1])) + int(sid[0] != prev)
            prev = sid[-1]
            pending.append(df)
            while n_pending > chunk_stars:
                both = pd.concat(pending, ignore_index=True)
                ids = both["source_id"].to_numpy()
                starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
                yield done(both.iloc[:starts[chunk_stars]])
                pending = [both.iloc[starts[chunk_stars]:]]
                n_pending = len(starts) - chunk_stars
    if pending:
        both = pd.concat(pending, ignore_index=True)
        if len(both):
            yield done(both)


def folded_chunks(path: Path, kind: str, chunk_stars: int) -> Iterator[pd.DataFrame]:
    """Folded-form requests (source_id, phase, mag, type) of every curve in a DG22-style
    tar.gz, `chunk_stars` whole stars at a time."""
    from rrlfeh.data.dg22 import read_dg22_curves

    curves = read_dg22_curves(path)
    ids = pd.unique(curves["source_id"])
    starts = np.searchsorted(curves["source_id"].to_numpy(), ids[::chunk_stars]) \
        if curves["source_id"].is_monotonic_increasing else None
    if starts is None:
        curves = curves.sort_values("source_id", kind="stable", ignore_index=True)
        starts = np.searchsorted(curves["source_id"].to_numpy(), np.sort(ids)[::chunk_stars])
    for a, b in zip(starts, [*starts[1:], len(curves)], strict=True):
        part = curves.iloc[a:b]
        yield pd.DataFrame({"source_id": part["source_id"].to_numpy(np.int64),
                            "phase": part["phase"].to_numpy(float),
                            "mag": part["mag"].to_numpy(float), "type": kind})


def _key(files: list[Path], model_uri: str, version: str, chunk_stars: int) -> str:
    """The cache folder's key: the model version, the chunking and the input files'
    sizes/dates."""
    h = hashlib.md5(f"{model_uri}|{version}|{chunk_stars}".encode())
    for path in files:
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def run(raw_dir: Path, p: Mapping[str, Any], tracking: Mapping[str, Any], root: Path,
        metrics_path: Path, folded: Mapping[str, Any] | None = None,
        engine: str | None = None) -> dict[str, Any]:
    """Score every star (of data/raw, or of `folded`'s curves file when given); write
    data/scored/catalogue.{parquet,csv}, figures and metrics. `engine` (default score.engine):
    `local` scores chunk by chunk in this process (`score.threads` chunks at once),
    `spark` on Spark (rrlfeh.serving.spark)."""
    from rrlfeh.io import write_table
    from rrlfeh.serving.pipeline import conform_output
    from rrlfeh.serving.pyfunc import predict_chunks
    from rrlfeh.serving.workers import worker_count
    from rrlfeh.training.tracking import TrackingSettings, setup_tracking

    engine = engine or str(p.get("engine", "local"))
    if engine == "spark":
        from rrlfeh.serving import spark

        spark.require_pyspark()
        settings = spark.SparkSettings.from_params(p.get("spark") or {})
        if folded is not None:
            raise ValueError("score --engine spark scores data/raw; folded curves "
                             "(preprocess.source: folded) are scored with --engine local")
    elif engine != "local":
        raise ValueError(f"score.engine {engine!r}: use local or spark")
    setup_tracking(TrackingSettings.from_params(tracking, root))
    uri = str(p["model_uri"])
    resolved = resolve(uri)
    version = resolved.version
    log.info("score: model %s", resolved.describe())
    chunk_stars = int(p.get("chunk_stars", 2000))
    if folded is None:
        stars = pd.read_parquet(raw_dir / "stars.parquet", columns=[*STAR_FIELDS, "ra", "dec"])
        rejected = _rejected(raw_dir)
        files = epoch_files(raw_dir)
        inputs = [raw_dir / "stars.parquet", *files,
                  *([raw_dir / "rejected.parquet"] if (raw_dir / "rejected.parquet").exists()
                    else [])]
        requests = (request_frame(chunk, stars) for chunk in epoch_chunks(files, chunk_stars))
        # data/raw as `acquire` writes it goes to Spark whole; parts or Gaia's layout in groups
        groups = (int(p.get("spark_chunk_stars", 10_000))
                  if engine == "spark" and (files != [raw_dir / "epochs.parquet"]
                                            or is_gaia_raw(files[0])) else 0)
    else:
        curves_file = root / folded["curves"]
        inputs = [curves_file]
        requests = folded_chunks(curves_file, str(folded.get("type", "RRab")), chunk_stars)
        files, groups = [], 0
        stars = None
        rejected = pd.DataFrame({"source_id": pd.Series([], dtype=np.int64), "stage": [],
                                 "reason": []})
    # the model's uuid, not only its version number: a new MLflow store numbers from 1 again
    identity = (f"{version}|{model_uuid(resolved)}" if engine == "local"
                else f"{version}|{engine}" + (f"|{groups}" if groups else ""))
    cache = root / p.get("cache_dir", "data/cache/score") / _key(inputs, uri, identity,
                                                                 chunk_stars)
    cache.mkdir(parents=True, exist_ok=True)
    n_stars = (len(stars) + int((~rejected["source_id"].isin(stars["source_id"])).sum())
               if stars is not None else None)
    done = sorted(cache.glob("chunk_*.parquet"))
    if done:
        log.info("score: resuming, %d finished chunk(s) in %s", len(done), cache)
    t0 = time.perf_counter()
    scored_ids: set[int] = set()
    if engine == "spark" and not groups:  # one Spark job over every star: the one chunk
        path = cache / "chunk_spark.parquet"
        if not path.exists():
            log.info("score: on Spark (%s), %s", settings.master, resolved.pinned)
            write_parquet(spark.score_raw(raw_dir, resolved.pinned, settings), path)
        scored_ids.update(pd.read_parquet(path, columns=["source_id"])["source_id"].tolist())
    elif engine == "spark":  # a Spark job a group of stars, each group's result cached
        scored_ids.update(_spark_groups(files, stars, cache, resolved.pinned, settings, groups,
                                        n_stars))
    else:
        progress = _progress(n_stars)
        n_cached = n_new = 0

        def unfinished():
            """(path, request) of each chunk not in the cache; finished ones counted here."""
            nonlocal n_cached
            for i, request in enumerate(requests):
                path = cache / f"chunk_{i:05d}.parquet"
                if path.exists():
                    ids = pd.read_parquet(path, columns=["source_id"])["source_id"]
                    scored_ids.update(ids.tolist())
                    progress.update(len(ids))
                    n_cached += 1
                else:
                    yield path, request

        threads = int(p.get("threads", 1))
        processes = worker_count(int(p.get("processes", 1)), n_stars, chunk_stars)
        # the model in this process only where it scores here (workers load their own)
        model = load_resolved(resolved) if processes == 1 else None
        for path, out in predict_chunks(model, unfinished(), threads=threads,
                                        processes=processes, source=resolved.pinned):
            write_parquet(out, path)
            scored_ids.update(out["source_id"].tolist())
            progress.update(len(out))
            n_new += 1
        progress.close()
        log.info("score: %d chunk(s) scored now, %d taken from the cache (%d at once, in %s)",
                 n_new, n_cached, processes if processes > 1 else threads,
                 "worker processes" if processes > 1 else "threads")
    rest = _without_epochs(rejected, stars, scored_ids) if stars is not None else []
    if len(rest):
        write_parquet(conform_output(rest), cache / "chunk_no_epochs.parquet")
    catalogue = _assemble(sorted(cache.glob("chunk_*.parquet")))
    out_dir = root / p.get("out_dir", "data/scored")
    write_parquet(catalogue, out_dir / "catalogue.parquet")
    write_table(catalogue, out_dir / "catalogue.csv")
    _figures(catalogue, stars, root / p.get("figures_dir", "reports/figures"))
    metrics = summary(catalogue)
    metrics.update(model_uri=uri, model_version=version,
                   seconds=round(time.perf_counter() - t0, 1))
    write_json(metrics, metrics_path)
    log.info("score: %d stars, %d scored (%d in the training domain), %d with a status; "
             "catalogue %s", metrics["n_stars"], metrics["n_ok"], metrics["n_in_domain"],
             metrics["n_stars"] - metrics["n_ok"], out_dir / "catalogue.parquet")
    return metrics


def _rejected(raw_dir: Path) -> pd.DataFrame:
    """data/raw/rejected.parquet, one row a star (none when the folder has no such file: an
    epoch set made outside `acquire`, e.g. `rrlfeh synth-raw`)."""
    path = raw_dir / "rejected.parquet"
    if not path.exists():
        return pd.DataFrame({"source_id": pd.Series([], dtype=np.int64), "stage": [],
                             "reason": []})
    return pd.read_parquet(path).drop_duplicates("source_id")


def _spark_groups(files: list[Path], stars: pd.DataFrame, cache: Path, model_uri: str,
                  settings: Any, group_stars: int, n_stars: int | None) -> set[int]:
    """The stars of epoch parts (either layout) scored on Spark, `group_stars` at a time: a
    group's canonical G epochs and its stars are written in data/raw's layout (what
    `spark.score_raw` reads) under cache/spark_input/, one Spark job a group, its result kept
    as a chunk, so a killed run redoes the unfinished groups only. The source_ids scored."""
    import shutil

    from rrlfeh.serving import spark

    scored: set[int] = set()
    progress = _progress(n_stars)
    n_new = n_all = 0
    for i, epochs in enumerate(epoch_chunks(files, max(1, group_stars))):
        path = cache / f"chunk_spark_{i:05d}.parquet"
        if not path.exists():
            group = cache / "spark_input" / f"group_{i:05d}"
            ids = pd.unique(epochs["source_id"])
            write_parquet(epochs, group / "epochs.parquet")
            write_parquet(stars[stars["source_id"].isin(ids)], group / "stars.parquet")
            log.info("score: group %d (%d stars) on Spark (%s)", i, len(ids), settings.master)
            write_parquet(spark.score_raw(group, model_uri, settings), path)
            shutil.rmtree(group)
            n_new += 1
        ids = pd.read_parquet(path, columns=["source_id"])["source_id"]
        scored.update(ids.tolist())
        progress.update(len(ids))
        n_all += 1
    progress.close()
    shutil.rmtree(cache / "spark_input", ignore_errors=True)
    log.info("score: %d Spark group(s) scored now, %d taken from the cache", n_new,
             n_all - n_new)
    return scored


def _without_epochs(rejected: pd.DataFrame, stars: pd.DataFrame,
                    scored: set[int]) -> pd.DataFrame:
    """Stars of data/raw with no epoch rows: a row each, the reason `acquire` gave as status
    (`rejected`: data/raw/rejected.parquet, one row a star)."""
    rej = rejected[~rejected["source_id"].isin(scored)]
    lone = stars[~stars["source_id"].isin(scored) & ~stars["source_id"].isin(rej["source_id"])]
    ids = np.r_[rej["source_id"].to_numpy(np.int64), lone["source_id"].to_numpy(np.int64)]
    why = [f"no epochs ({r['stage']}: {r['reason']})" for _, r in rej.iterrows()] + \
        ["no epochs"] * len(lone)
    return pd.DataFrame({"source_id": ids, "type": None, "period": np.nan,
                         "period_derived": False, "n_epochs": 0, "status": why,
                         "in_domain": False, "domain_reason": "not scored"})


def _assemble(paths: list[Path]) -> pd.DataFrame:
    """The chunks as one table, each star once (a star in two files would be a bug: an error)."""
    cat = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    dup = cat["source_id"].duplicated()
    if dup.any():
        raise ValueError(f"score: source_id {cat.loc[dup, 'source_id'].iloc[0]} is in two "
                         "chunks: its epochs are in two places (a star's rows must be together, "
                         "in one part), or the cache is stale (remove it and rerun)")
    return cat.sort_values("source_id", ignore_index=True)


def summary(cat: pd.DataFrame) -> dict[str, Any]:
    """Counts and the [Fe/H] distribution of the catalogue, per type (DVC metrics)."""
    ok = cat["status"] == "ok"
    out: dict[str, Any] = {"n_stars": len(cat), "n_ok": int(ok.sum()),
                           "n_in_domain": int(cat["in_domain"].sum()), "by_type": {}}
    for kind, g in cat[ok].groupby("type"):
        out["by_type"][str(kind)] = {
            "n": len(g), "feh_median": float(g["feh"].median()),
            "feh_p16": float(g["feh"].quantile(0.16)), "feh_p84": float(g["feh"].quantile(0.84)),
            "feh_std_median": float(g["feh_std"].median())}
    reasons = cat.loc[~ok, "status"].str.split(r" \(|:|;", regex=True).str[0].str.strip()
    out["status_counts"] = {str(k): int(v) for k, v in reasons.value_counts().head(20).items()}
    return out


def _progress(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, desc="score", unit="star", mininterval=2.0)


def _figures(cat: pd.DataFrame, stars: pd.DataFrame | None, out: Path) -> None:
    """The catalogue's [Fe/H] distribution and its sky map (paper Fig. 8; positions from the
    stars table where there is one, else from the source_id)."""
    from rrlfeh.serving import figures

    ok = cat[cat["status"] == "ok"]
    if stars is not None:
        ok = ok.merge(stars[["source_id", "ra", "dec"]], on="source_id", how="left")
    figures.feh_histogram(ok, out / "catalogue_feh.png")
    figures.sky_map(ok, out / "catalogue_sky.png")
