"""Acquire the raw tables from the ESA Gaia archive with astroquery: stars, epochs and labels.

Resumable (every finished batch of epoch photometry is cached atomically and skipped on rerun),
retrying with exponential back-off, and quick to fail offline: a socket probe of the archive host
runs before anything else and raises `ArchiveUnreachable` within seconds.
`astroquery.gaia` is imported only inside `gaia_client`, because importing it contacts the archive.
The client is injectable (tests pass a fake that answers like astroquery 0.4.11).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from rrlfeh.data import layouts, schema

log = logging.getLogger(__name__)

GAIA_HOST = "gea.esac.esa.int"  # both the TAP and the DataLink (data-server) endpoints
GAIA_PORT = 443
MAX_IDS_PER_CALL = 5000  # the DataLink server refuses more ids in one call
BATCH_PREFIX = "epoch_photometry-batch"
MISSING_FILE = "missing_stars.csv"
MISSING_REASON = "absent from the Gaia archive's EPOCH_PHOTOMETRY answer"

T = TypeVar("T")
_sleep: Callable[[float], None] = time.sleep  # module-level so tests can record the back-off


class ArchiveUnreachable(ConnectionError):
    """The Gaia archive host cannot be reached (no network, DNS failure, or no answer in time)."""


class BatchFailed(RuntimeError):
    """A call to the archive kept failing after all its retries."""


class MissingStarsWarning(UserWarning):
    """Stars were asked for but the archive returned no epoch photometry for them."""


class GaiaDataWarning(UserWarning):
    """Rows of an archive answer were rejected (the message names the source_ids and why)."""


# --------------------------------------------------------------------------- connectivity

def probe_archive(host: str = GAIA_HOST, port: int = GAIA_PORT, *, timeout_s: float = 5.0,
                  tls: bool = True) -> None:
    """Raise `ArchiveUnreachable` unless host:port answers within about `timeout_s` seconds.

    Three steps share the time: DNS lookup (in a daemon thread, since `getaddrinfo` ignores socket
    timeouts and can hang), TCP connect, and, with `tls`, a TLS handshake that verifies the host
    name — a bare TCP connect is not enough where a gateway accepts connections to any address.
    """
    deadline = time.monotonic() + timeout_s
    found: dict[str, Any] = {}

    def resolve() -> None:
        try:
            found["addrs"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            found["error"] = err

    def unreachable(why: str) -> ArchiveUnreachable:
        return ArchiveUnreachable(f"The Gaia archive cannot be reached: {host}:{port} ({why}). "
                                  "Check the network, or use an offline data source.")

    worker = threading.Thread(target=resolve, name=f"dns-{host}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise unreachable(f"DNS lookup gave no answer within {timeout_s:g} s")
    if "error" in found:
        raise unreachable(f"DNS lookup failed: {found['error']}")
    errors = []
    for family, kind, proto, _, address in found["addrs"]:
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"no answer within {timeout_s:g} s")
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(left)
                sock.connect(address)
                if tls:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    context = ssl.create_default_context()
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
                return
        except OSError as err:  # ssl.SSLError and socket.timeout are OSErrors too
            errors.append(f"{address[0]}: {err or type(err).__name__}")
    raise unreachable(f"{'TLS' if tls else 'TCP'} connection failed: {'; '.join(errors)}")


@contextlib.contextmanager
def socket_timeout(timeout_s: float) -> Iterator[None]:
    """Set the default socket timeout for the block (astroquery's TAP client sets none)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def gaia_client(*, timeout_s: float = 30.0, probe_timeout_s: float = 5.0) -> Any:
    """A live astroquery Gaia client, after the connectivity probe (imports astroquery lazily)."""
    probe_archive(timeout_s=probe_timeout_s)
    with socket_timeout(timeout_s):
        from astroquery.gaia import GaiaClass  # contacts the archive on import

        return GaiaClass(show_server_messages=False)


def _with_retries(call: Callable[[], T], *, what: str, retries: int, backoff_s: float) -> T:
    """Run `call`; on failure retry up to `retries` times, sleeping backoff_s * 2**k between tries.

    Programming errors (TypeError, AttributeError, NameError) are not retried.
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return call()
        except (TypeError, AttributeError, NameError):
            raise
        except Exception as err:  # network, HTTP, truncated-download errors: all worth a retry
            last = err
            if attempt == retries:
                break
            delay = backoff_s * 2.0 ** attempt
            log.warning("%s failed (%s: %s); retry %d/%d in %.3g s",
                        what, type(err).__name__, err, attempt + 1, retries, delay)
            _sleep(delay)
    raise BatchFailed(f"{what} failed after {retries + 1} attempts; last error "
                      f"{type(last).__name__}: {last}") from last


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
                  phi31_shift_rad: float = 0.0) -> pd.DataFrame:
    """Stars table (schema.STARS) of Gaia DR3 RRab and RRc stars, ordered by source_id.

    See `stars_from_archive` for the column mapping and the phi31 convention assumed.
    """
    found = query_vari_rrlyrae(max_stars=max_stars, client=client, timeout_s=timeout_s,
                               retries=retries, backoff_s=backoff_s,
                               probe_timeout_s=probe_timeout_s)
    return stars_from_archive(found, phi31_shift_rad=phi31_shift_rad)


def query_vari_rrlyrae(*, max_stars: int | None = None, client: Any = None,
                       timeout_s: float = 30.0, retries: int = 4, backoff_s: float = 2.0,
                       probe_timeout_s: float = 5.0) -> pd.DataFrame:
    """The archive's answer to `rrlyrae_adql` as it came (lower-case column names).

    Runs as an asynchronous job (the sync endpoint caps its rows), retried with back-off.
    """
    if max_stars is not None and (int(max_stars) != max_stars or max_stars < 1):
        raise ValueError(f"max_stars must be a positive integer or None, not {max_stars!r}")
    client = client if client is not None else gaia_client(timeout_s=timeout_s,
                                                           probe_timeout_s=probe_timeout_s)
    query = rrlyrae_adql(max_stars)

    def run() -> pd.DataFrame:
        with socket_timeout(timeout_s):
            table = client.launch_job_async(query).get_results()
        return layouts.astropy_to_pandas([table], "vari_rrlyrae query")

    found = _with_retries(run, what="vari_rrlyrae query", retries=retries, backoff_s=backoff_s)
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
                      f"source_id {ids[:20]}{' ...' if len(ids) > 20 else ''}",
                      GaiaDataWarning, stacklevel=2)
    reject = df["source_id"].isin(rejects["source_id"]).to_numpy()
    df, kind = df.loc[~reject], kind[~reject]
    dup = df["source_id"].duplicated(keep=False)
    if dup.any():
        raise schema.SchemaError(f"vari_rrlyrae answer repeats source_id "
                                 f"{sorted(set(df.loc[dup, 'source_id'].tolist()))[:10]}")

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

_LABEL_ALIASES: dict[str, tuple[str, ...]] = {  # compared after lower-casing, keeping [a-z0-9]
    "source_id": ("sourceid", "source", "gaiadr3", "gaiadr3sourceid", "dr3sourceid",
                  "sourceiddr3", "gaiasourceid"),
    "feh": ("feh", "fehphot", "fehour", "metallicity", "mh"),
    "feh_error": ("feherror", "feherr", "efeh", "errfeh", "sigmafeh", "fehsigma", "efehphot",
                  "fehphoterr", "fehphoterror", "fehe", "fehunc", "uncfeh"),
}


def _text(value: object) -> str:
    """Lower-case stripped text of a str or bytes cell (VOTable char columns may be bytes)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip().lower()


def _alias_key(name: object) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def read_labels(path: str | Path) -> pd.DataFrame:
    """Labels table (schema.LABELS) from a Muraveva et al. 2025-form catalogue file.

    csv, parquet, FITS or VOTable, with source_id and [Fe/H] under common names (feh, FeH,
    [Fe/H], FeH_our; errors e_FeH, feh_err, sigma_feh...). A missing error column becomes NaN.
    Gaia DR2 ids (e.g. source_id_dr2) are deliberately NOT accepted: they differ from DR3 ids.
    """
    return labels_from_frame(layouts.read_table(path), origin=str(path))


def labels_from_frame(df: pd.DataFrame, *, origin: str = "labels") -> pd.DataFrame:
    """Map a catalogue DataFrame to schema.LABELS (see `read_labels`)."""
    chosen: dict[str, str] = {}
    for role, aliases in _LABEL_ALIASES.items():
        hits = [c for c in df.columns if _alias_key(c) in aliases]
        if len(hits) > 1:
            raise schema.SchemaError(f"{origin}: several columns could be {role!r}: {hits}")
        if hits:
            chosen[role] = hits[0]
    for role in ("source_id", "feh"):
        if role not in chosen:
            raise schema.SchemaError(f"{origin}: no {role!r} column (accepted names: "
                                     f"{list(_LABEL_ALIASES[role])}, any case/punctuation; "
                                     f"have {list(df.columns)})")
    out = pd.DataFrame({role: df[col] for role, col in chosen.items()})
    if out["source_id"].isna().any():
        raise schema.SchemaError(f"{origin}: {int(out['source_id'].isna().sum())} rows "
                                 "have no source_id")
    out["source_id"] = pd.to_numeric(out["source_id"], errors="raise").astype("int64")
    out["feh"] = pd.to_numeric(out["feh"], errors="coerce").astype("float64")
    no_feh = ~np.isfinite(out["feh"].to_numpy())
    if no_feh.any():
        ids = out.loc[no_feh, "source_id"].tolist()
        warnings.warn(f"{origin}: rejected {len(ids)} labels with a null or non-numeric [Fe/H]: "
                      f"source_id {ids[:20]}{' ...' if len(ids) > 20 else ''}",
                      GaiaDataWarning, stacklevel=2)
        out = out.loc[~no_feh]
    dup = out["source_id"].duplicated(keep=False)
    if dup.any():
        raise schema.SchemaError(f"{origin}: source_id repeated: "
                                 f"{sorted(set(out.loc[dup, 'source_id'].tolist()))[:10]}")
    return schema.conform(out, schema.LABELS, "labels")


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
                      f"source_id {ids[:20]}", GaiaDataWarning, stacklevel=2)
        epochs = epochs.loc[~extra].reset_index(drop=True)
    return epochs


def _write_atomically(df: pd.DataFrame, path: Path) -> None:
    """Write parquet to a temporary file beside `path`, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def missing_stars(source_ids: Iterable[int], epochs: pd.DataFrame) -> pd.DataFrame:
    """Stars asked for that have no row in `epochs`: (source_id, reason), sorted."""
    asked = np.unique(np.asarray(list(source_ids), dtype="int64"))
    absent = asked[~np.isin(asked, epochs["source_id"].to_numpy())]
    return pd.DataFrame({"source_id": absent.astype("int64"),
                         "reason": pd.Series([MISSING_REASON] * len(absent), dtype="string")})


def fetch_epoch_photometry(source_ids: Iterable[int], cache_dir: str | Path, *,
                           batch_size: int = MAX_IDS_PER_CALL, retries: int = 4,
                           backoff_s: float = 2.0, timeout_s: float = 30.0, client: Any = None,
                           probe_timeout_s: float = 5.0,
                           data_release: str = "Gaia DR3") -> pd.DataFrame:
    """Epochs table (schema.EPOCHS, G band, rejected rows kept) for `source_ids` from DataLink.

    Ids are sorted and split into batches of <= batch_size; each batch is one `load_data` call
    (INDIVIDUAL votable, valid_data=False), retried with back-off, and cached atomically in
    `cache_dir`; a rerun skips cached batches, so it fetches only what is missing (and needs no
    network when nothing is). Stars absent from the answer are written to
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
        client = gaia_client(timeout_s=timeout_s, probe_timeout_s=probe_timeout_s)
    for i in todo:
        ids = plan[i]

        def load(ids: np.ndarray = ids) -> dict[str, Any]:
            with socket_timeout(timeout_s):
                return client.load_data(ids=[int(x) for x in ids],
                                        data_release=data_release,
                                        retrieval_type="EPOCH_PHOTOMETRY",
                                        data_structure="INDIVIDUAL", format="votable",
                                        valid_data=False)

        what = (f"EPOCH_PHOTOMETRY batch {i + 1}/{len(plan)} "
                f"(source_id {ids[0]}..{ids[-1]}, {len(ids)} stars)")
        result = _with_retries(load, what=what, retries=retries, backoff_s=backoff_s)
        _write_atomically(epochs_from_datalink(result, ids), paths[i])
        log.info("%s cached in %s", what, paths[i].name)

    frames = [pd.read_parquet(path) for path in paths]
    epochs = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame({c: pd.Series(dtype=t) for c, t in schema.EPOCHS.items()}))
    epochs = epochs.sort_values(["source_id", "transit_id"], kind="stable")
    epochs = schema.conform(epochs, schema.EPOCHS, "epochs")

    absent = missing_stars(np.concatenate(plan) if plan else [], epochs)
    absent.to_csv(cache_dir / MISSING_FILE, index=False)
    if len(absent):
        ids = absent["source_id"].tolist()
        warnings.warn(f"{len(ids)} stars have no epoch photometry in the archive "
                      f"(listed in {cache_dir / MISSING_FILE}): source_id {ids[:20]}"
                      f"{' ...' if len(ids) > 20 else ''}", MissingStarsWarning, stacklevel=2)
    return epochs


# --------------------------------------------------------------------------- all three

def acquire_from_gaia(cache_dir: str | Path, labels_path: str | Path | None, *,
                      max_stars: int | None = None, batch_size: int = MAX_IDS_PER_CALL,
                      retries: int = 4, backoff_s: float = 2.0, timeout_s: float = 30.0,
                      client: Any = None, probe_timeout_s: float = 5.0,
                      phi31_shift_rad: float = 0.0, data_release: str = "Gaia DR3",
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(stars, epochs, labels, rejected) from the archive, the query answer cached too.

    `rejected` (source_id, reason) lists the query rows that cannot become stars and the stars
    without epoch photometry; those are not in `stars`. Labels are read first (a bad path fails
    before any download); `labels_path=None` gives an empty labels table. A rerun after a
    failure repeats neither the query nor finished batches.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    labels = (read_labels(labels_path) if labels_path is not None
              else schema.conform(pd.DataFrame(columns=list(schema.LABELS)), schema.LABELS,
                                  "labels"))
    answer_file = cache_dir / f"vari_rrlyrae-{'all' if max_stars is None else f'top{max_stars}'}" \
                              ".parquet"
    if answer_file.exists():
        answer = pd.read_parquet(answer_file)
    else:
        if client is None:
            client = gaia_client(timeout_s=timeout_s, probe_timeout_s=probe_timeout_s)
        answer = query_vari_rrlyrae(max_stars=max_stars, client=client, timeout_s=timeout_s,
                                    retries=retries, backoff_s=backoff_s)
        _write_atomically(answer, answer_file)
    stars = stars_from_archive(answer, phi31_shift_rad=phi31_shift_rad)
    epochs = fetch_epoch_photometry(stars["source_id"], cache_dir, batch_size=batch_size,
                                    retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                                    client=client, probe_timeout_s=probe_timeout_s,
                                    data_release=data_release)
    absent = missing_stars(stars["source_id"], epochs)
    rejected = pd.concat([archive_rejects(answer), absent], ignore_index=True)
    stars = stars[~stars["source_id"].isin(absent["source_id"])].reset_index(drop=True)
    return stars, epochs, labels, rejected
