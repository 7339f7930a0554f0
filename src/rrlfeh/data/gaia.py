"""Acquire the raw tables from the ESA Gaia archive with astroquery: stars, epochs and labels.

Resumable (every finished batch of epoch photometry is cached atomically and skipped on rerun),
retrying with exponential back-off on HTTP errors, resets, timeouts and truncated answers,
re-asking the stars a DataLink answer left out, and quick to fail offline (the connection,
probe and retries: `rrlfeh.data.gaia_client`). The client is injectable (tests pass one that
answers like astroquery 0.4.11).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import layouts, schema
from rrlfeh.data.gaia_client import (  # noqa: F401  (the errors re-exported for callers)
    ARCHIVE_URL,
    ArchiveUnreachable,
    BatchFailed,
    astroquery_call,
    gaia_client,
    with_retries,
)
from rrlfeh.data.labels import read_labels
from rrlfeh.io import write_parquet, write_table
from rrlfeh.reasons import first_of

log = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 5000  # the DataLink server refuses more ids in one call
BATCH_PREFIX = "epoch_photometry-batch"
MISSING_FILE = "missing_stars.csv"
MISSING_REASON = "absent from the Gaia archive's EPOCH_PHOTOMETRY answer"
WORK_DIR = "astroquery"  # under the cache: astroquery unpacks DataLink zips into the cwd

class MissingStarsWarning(UserWarning):
    """Stars were asked for but the archive returned no epoch photometry for them."""


class GaiaDataWarning(UserWarning):
    """Rows of an archive answer were rejected (the message names the source_ids and why)."""


# --------------------------------------------------------------------------- stars

def rrlyrae_adql(max_stars: int | None = None) -> str:
    """ADQL for the RRab/RRc rows of gaiadr3.vari_rrlyrae with ra, dec from gaiadr3.gaia_source."""
    top = f"TOP {int(max_stars)} " if max_stars is not None else ""
    return (
        f"SELECT {top}v.source_id, v.best_classification, v.pf, v.p1_o, v.epoch_g, "
        "v.peak_to_peak_g, v.int_average_g, v.num_clean_epochs_g, v.phi31_g, v.phi31_g_error, "
        "v.r21_g, g.ra, g.dec "
        "FROM gaiadr3.vari_rrlyrae AS v "
        "JOIN gaiadr3.gaia_source AS g ON g.source_id = v.source_id "
        "WHERE v.best_classification IN ('RRab', 'RRc') "
        "ORDER BY v.source_id"
    )


def query_rrlyrae(*, max_stars: int | None = None, client: Any = None, timeout_s: float = 30.0,
                  retries: int = 4, backoff_s: float = 2.0, probe_timeout_s: float = 5.0,
                  phi31_shift_rad: float = 0.0, archive_url: str = ARCHIVE_URL) -> pd.DataFrame:
    """Stars table (schema.STARS) of Gaia DR3 RRab and RRc stars, ordered by source_id.

    See `stars_from_archive` for the column mapping and the phi31 convention assumed.
    """
    found = query_vari_rrlyrae(max_stars=max_stars, client=client, timeout_s=timeout_s,
                               retries=retries, backoff_s=backoff_s,
                               probe_timeout_s=probe_timeout_s, archive_url=archive_url)
    return stars_from_archive(found, phi31_shift_rad=phi31_shift_rad)


def query_vari_rrlyrae(*, max_stars: int | None = None, client: Any = None,
                       timeout_s: float = 30.0, retries: int = 4, backoff_s: float = 2.0,
                       probe_timeout_s: float = 5.0,
                       archive_url: str = ARCHIVE_URL) -> pd.DataFrame:
    """The archive's answer to `rrlyrae_adql` as it came (lower-case column names).

    Runs as an asynchronous job (the sync endpoint caps its rows), retried with back-off (a new
    job each try); a truncated answer fails to parse and is retried, never kept short.
    """
    if max_stars is not None and (int(max_stars) != max_stars or max_stars < 1):
        raise ValueError(f"max_stars must be a positive integer or None, not {max_stars!r}")
    if client is None:
        client = gaia_client(archive_url=archive_url, timeout_s=timeout_s,
                             probe_timeout_s=probe_timeout_s)
    query = rrlyrae_adql(max_stars)

    def run() -> pd.DataFrame:
        with astroquery_call(timeout_s):
            table = client.launch_job_async(query).get_results()
        return layouts.astropy_to_pandas([table], "vari_rrlyrae query")

    found = with_retries(run, what="vari_rrlyrae query", retries=retries, backoff_s=backoff_s)
    return found.rename(columns={c: str(c).lower() for c in found.columns})


def stars_from_archive(df: pd.DataFrame, *, phi31_shift_rad: float = 0.0) -> pd.DataFrame:
    """Map a vari_rrlyrae (+ ra, dec) result to schema.STARS.

    period = pf for RRab, p1_o for RRc; epoch_g -> epoch_max; peak_to_peak_g -> amplitude_g;
    int_average_g -> mean_mag_g; num_clean_epochs_g -> n_epochs_g; *_derived flags False.
    phi31: Gaia's phi31_g is taken to follow our cosine-series convention (schema.py). Our own
    cosine fits of the 9,999 real DR3 curves give RRab a median of 2.09 rad (5-95 %: 1.5-3.0), the
    range of Gaia's phi31_g and of Iorio & Belokurov's 2.0 rad pivot; relations written for the
    sine convention (about 5.3 rad, e.g. arXiv:2605.13811) take schema.phi31_sine. Not checked
    against catalogue rows offline: if a download shows a pi offset, set `phi31_shift_rad=pi`
    (added, then wrapped mod 2 pi).
    Rows without a type or a clean-epoch count are rejected with a `GaiaDataWarning` naming them.
    """
    df = df.rename(columns={c: str(c).lower() for c in df.columns})
    need = ["source_id", "best_classification", "pf", "p1_o", "epoch_g", "peak_to_peak_g",
            "int_average_g", "num_clean_epochs_g", "phi31_g", "phi31_g_error", "r21_g"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise schema.SchemaError(f"vari_rrlyrae answer lacks columns {missing} "
                                 f"(have {sorted(df.columns)})")
    kind = _kind(df)
    rejects = archive_rejects(df)
    for reason, ids in rejects.groupby("reason")["source_id"]:
        ids = ids.tolist()
        warnings.warn(f"vari_rrlyrae: rejected {len(ids)} stars because {reason}: "
                      f"source_id {first_of(ids, 20)}",
                      GaiaDataWarning, stacklevel=2)
    reject = df["source_id"].isin(rejects["source_id"]).to_numpy()
    df, kind = df.loc[~reject], kind[~reject]
    dup = df["source_id"].duplicated(keep=False)
    if dup.any():
        raise schema.SchemaError(f"vari_rrlyrae answer repeats source_id "
                                 f"{first_of(sorted(set(df.loc[dup, 'source_id'].tolist())))}")

    def num(col: str) -> pd.Series:
        return pd.to_numeric(df[col], errors="raise").astype("float64")

    phi31 = np.mod(num("phi31_g") + phi31_shift_rad, 2 * np.pi)
    out = pd.DataFrame({
        "source_id": df["source_id"].astype("int64"),
        "type": kind,
        "period": num("pf").where(kind == "RRab", num("p1_o")),
        "epoch_max": num("epoch_g"),
        "amplitude_g": num("peak_to_peak_g"),
        "mean_mag_g": num("int_average_g"),
        "n_epochs_g": df["num_clean_epochs_g"].astype("int64"),
        "phi31_g": phi31,
        "phi31_g_error": num("phi31_g_error"),
        "r21_g": num("r21_g"),
        "ra": num("ra") if "ra" in df.columns else np.nan,
        "dec": num("dec") if "dec" in df.columns else np.nan,
    })
    out = out.sort_values("source_id", kind="stable")
    return schema.conform(out, schema.STARS, "stars")


def _kind(df: pd.DataFrame) -> pd.Series:
    """'RRab' / 'RRc' from best_classification (NaN for anything else)."""
    return df["best_classification"].map(_text).map({"rrab": "RRab", "rrc": "RRc"})


def archive_rejects(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of a vari_rrlyrae answer that cannot become stars: (source_id, reason), the first
    reason that applies (no RRab/RRc type, or no clean-epoch count)."""
    df = df.rename(columns={c: str(c).lower() for c in df.columns})
    bad = {
        "best_classification is not RRab or RRc": _kind(df).isna(),
        "num_clean_epochs_g is null": df["num_clean_epochs_g"].isna(),
    }
    reason = pd.Series(pd.NA, index=df.index, dtype="string")
    for text, mask in bad.items():
        reason = reason.mask(mask & reason.isna(), text)
    out = pd.DataFrame({"source_id": df["source_id"], "reason": reason}).dropna()
    return out.astype({"source_id": "int64"}).reset_index(drop=True)


# --------------------------------------------------------------------------- labels

def _text(value: object) -> str:
    """Lower-case stripped text of a str or bytes cell (VOTable char columns may be bytes)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip().lower()



# --------------------------------------------------------------------------- epochs

def plan_batches(source_ids: Iterable[int], batch_size: int = MAX_IDS_PER_CALL) -> list[np.ndarray]:
    """Sorted unique ids split into consecutive batches of at most `batch_size` (deterministic)."""
    if not 1 <= batch_size <= MAX_IDS_PER_CALL:
        raise ValueError(f"batch_size must be in 1..{MAX_IDS_PER_CALL} (the archive refuses more "
                         f"ids a call), not {batch_size}")
    ids = np.unique(np.asarray(list(source_ids), dtype="int64"))
    return [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]


def batch_path(cache_dir: str | Path, index: int, ids: np.ndarray) -> Path:
    """Cache file of one batch: its index plus a digest of its ids, so a changed plan never reuses
    a stale file."""
    digest = hashlib.sha1(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()[:12]
    return Path(cache_dir) / f"{BATCH_PREFIX}-{index:05d}-{digest}.parquet"


def epochs_from_datalink(result: dict[str, Any], requested: np.ndarray) -> pd.DataFrame:
    """Canonical epochs from a `load_data` answer (file name -> list of votable elements/Tables).

    Stars the archive returned but nobody asked for are dropped with a `GaiaDataWarning`.
    """
    tables = []
    for key in sorted(result):
        items = result[key]
        for item in items if isinstance(items, list) else [items]:
            tables.append(item.to_table() if hasattr(item, "to_table") else item)
    if tables:
        raw = layouts.astropy_to_pandas(tables, "EPOCH_PHOTOMETRY answer")
    else:
        raw = pd.DataFrame({c: pd.Series(dtype="object") for c in layouts.INDIVIDUAL_COLUMNS})
    epochs = layouts.to_epochs(raw, layout="individual")
    extra = ~epochs["source_id"].isin(requested)
    if extra.any():
        ids = sorted(epochs.loc[extra, "source_id"].unique().tolist())
        warnings.warn(f"EPOCH_PHOTOMETRY answer holds stars not asked for, dropped: "
                      f"source_id {first_of(ids, 20)}", GaiaDataWarning, stacklevel=2)
        epochs = epochs.loc[~extra].reset_index(drop=True)
    return epochs


def missing_stars(source_ids: Iterable[int], epochs: pd.DataFrame) -> pd.DataFrame:
    """Stars asked for that have no row in `epochs`: (source_id, reason), sorted."""
    asked = np.unique(np.asarray(list(source_ids), dtype="int64"))
    absent = asked[~np.isin(asked, epochs["source_id"].to_numpy())]
    return pd.DataFrame({"source_id": absent.astype("int64"),
                         "reason": pd.Series([MISSING_REASON] * len(absent), dtype="string")})


def fetch_batch(client: Any, ids: np.ndarray, *, what: str, reask: int = 2, retries: int = 4,
                backoff_s: float = 2.0, timeout_s: float = 30.0, work_dir: Path | None = None,
                data_release: str = "Gaia DR3") -> pd.DataFrame:
    """Epochs of one batch: a DataLink call (retried), then up to `reask` calls for the stars its
    answer left out. Stars still absent stay absent (the archive has no light curve for them);
    a call that keeps failing raises `BatchFailed` naming the batch and the stars not fetched."""
    parts: list[pd.DataFrame] = []
    wanted = np.asarray(ids, dtype="int64")
    for round_ in range(reask + 1):
        def load(ask: np.ndarray = wanted) -> pd.DataFrame:
            with astroquery_call(timeout_s, work_dir):
                result = client.load_data(ids=[int(x) for x in ask], data_release=data_release,
                                          retrieval_type="EPOCH_PHOTOMETRY",
                                          data_structure="INDIVIDUAL", format="votable",
                                          valid_data=False)
            return epochs_from_datalink(result, ask)  # a truncated VOTable fails here: retried

        call = what if round_ == 0 else f"{what}, re-ask {round_}/{reask}"
        try:
            part = with_retries(load, what=call, retries=retries, backoff_s=backoff_s)
        except BatchFailed as err:
            raise BatchFailed(f"{err}; not fetched: {len(wanted)} stars, source_id "
                              f"{_ids_text(wanted)}") from err.__cause__
        parts.append(part)
        wanted = wanted[~np.isin(wanted, part["source_id"].to_numpy())]
        if not len(wanted):
            break
        if round_ < reask:
            log.warning("%s: the answer lacks %d of the %d stars asked (source_id %s); asking "
                        "for them again", call, len(wanted), len(ids), _ids_text(wanted))
    return pd.concat(parts, ignore_index=True)


def _ids_text(ids: Iterable[int], shown: int = 20) -> str:
    ids = [int(i) for i in ids]
    return f"{ids[:shown]}{' ...' if len(ids) > shown else ''}"


def fetch_epoch_photometry(source_ids: Iterable[int], cache_dir: str | Path, *,
                           batch_size: int = MAX_IDS_PER_CALL, retries: int = 4,
                           backoff_s: float = 2.0, timeout_s: float = 30.0, client: Any = None,
                           probe_timeout_s: float = 5.0, data_release: str = "Gaia DR3",
                           archive_url: str = ARCHIVE_URL, reask: int = 2) -> pd.DataFrame:
    """Epochs table (schema.EPOCHS, G band, rejected rows kept) for `source_ids` from DataLink.

    Ids are sorted and split into batches of <= batch_size; each batch is fetched by
    `fetch_batch` (INDIVIDUAL votable, valid_data=False) and cached atomically in `cache_dir`
    (a killed run leaves no partial batch file); a rerun skips cached batches, so it fetches only
    what is missing (and needs no network when nothing is). Each star comes from the one batch
    that asked for it, so none appears twice. Stars absent from the answers are written to
    cache_dir/missing_stars.csv and announced with a `MissingStarsWarning`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_batches(source_ids, batch_size)
    paths = [batch_path(cache_dir, i, ids) for i, ids in enumerate(plan)]
    todo = [i for i, path in enumerate(paths) if not path.exists()]
    log.info("epoch photometry: %d batches, %d cached, %d to fetch",
             len(plan), len(plan) - len(todo), len(todo))
    if todo and client is None:
        client = gaia_client(archive_url=archive_url, timeout_s=timeout_s,
                             probe_timeout_s=probe_timeout_s)
    for i in todo:
        ids = plan[i]
        what = (f"EPOCH_PHOTOMETRY batch {i + 1}/{len(plan)} "
                f"(source_id {ids[0]}..{ids[-1]}, {len(ids)} stars)")
        batch = fetch_batch(client, ids, what=what, reask=reask, retries=retries,
                            backoff_s=backoff_s, timeout_s=timeout_s,
                            work_dir=cache_dir / WORK_DIR, data_release=data_release)
        write_parquet(batch, paths[i])
        log.info("%s cached in %s", what, paths[i].name)

    frames = [pd.read_parquet(path) for path in paths]
    epochs = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame({c: pd.Series(dtype=t) for c, t in schema.EPOCHS.items()}))
    epochs = epochs.sort_values(["source_id", "transit_id"], kind="stable")
    epochs = schema.conform(epochs, schema.EPOCHS, "epochs")
    twice = epochs.duplicated(["source_id", "transit_id"], keep=False)
    if twice.any():  # cannot happen with disjoint batches; a stale cache would show here
        raise schema.SchemaError(f"epochs of {cache_dir} repeat transits of source_id "
                                 f"{_ids_text(epochs.loc[twice, 'source_id'].unique())}")

    absent = missing_stars(np.concatenate(plan) if plan else [], epochs)
    write_table(absent, cache_dir / MISSING_FILE)
    if len(absent):
        warnings.warn(f"{len(absent)} stars have no epoch photometry in the archive "
                      f"(listed in {cache_dir / MISSING_FILE}): source_id "
                      f"{_ids_text(absent['source_id'])}", MissingStarsWarning, stacklevel=2)
    return epochs


# --------------------------------------------------------------------------- all three

def acquire_from_gaia(cache_dir: str | Path, labels_path: str | Path | None, *,
                      max_stars: int | None = None, batch_size: int = MAX_IDS_PER_CALL,
                      retries: int = 4, backoff_s: float = 2.0, timeout_s: float = 30.0,
                      client: Any = None, probe_timeout_s: float = 5.0,
                      phi31_shift_rad: float = 0.0, data_release: str = "Gaia DR3",
                      archive_url: str = ARCHIVE_URL, reask: int = 2,
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(stars, epochs, labels, rejected) from the archive at `archive_url`, the query answer
    cached too.

    `rejected` (source_id, reason) lists the query rows that cannot become stars and the stars
    without epoch photometry (those are not in `stars`), and the stars whose label cannot be
    read. Labels are read first (a bad path fails
    before any download); `labels_path=None` gives an empty labels table. A rerun after a
    failure repeats neither the query nor finished batches.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    bad_labels: list[pd.DataFrame] = []
    labels = (read_labels(labels_path, set_aside=bad_labels) if labels_path is not None
              else schema.conform(pd.DataFrame(columns=list(schema.LABELS)), schema.LABELS,
                                  "labels"))
    answer_file = cache_dir / f"vari_rrlyrae-{'all' if max_stars is None else f'top{max_stars}'}" \
                              ".parquet"
    if answer_file.exists():
        answer = pd.read_parquet(answer_file)
    else:
        if client is None:
            client = gaia_client(archive_url=archive_url, timeout_s=timeout_s,
                                 probe_timeout_s=probe_timeout_s)
        answer = query_vari_rrlyrae(max_stars=max_stars, client=client, timeout_s=timeout_s,
                                    retries=retries, backoff_s=backoff_s)
        write_parquet(answer, answer_file)
    stars = stars_from_archive(answer, phi31_shift_rad=phi31_shift_rad)
    epochs = fetch_epoch_photometry(stars["source_id"], cache_dir, batch_size=batch_size,
                                    retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                                    client=client, probe_timeout_s=probe_timeout_s,
                                    data_release=data_release, archive_url=archive_url,
                                    reask=reask)
    absent = missing_stars(stars["source_id"], epochs)
    rejected = pd.concat([archive_rejects(answer), absent, *bad_labels], ignore_index=True)
    stars = stars[~stars["source_id"].isin(absent["source_id"])].reset_index(drop=True)
    return stars, epochs, labels, rejected
