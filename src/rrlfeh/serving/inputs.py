"""What a user sends, made into one request: epochs in time or in phase, and per-star values.

Accepted frames (column names case-insensitive, one row per epoch):
- long form: ``source_id, time, mag`` with optional ``mag_error`` or ``flux, flux_error``, an
  optional ``rejected`` flag (rows left out of the fit, as Gaia flagged them) and optional
  per-star columns ``period, epoch_max, type`` (repeated on every row of the star, or given on
  one of them), and an optional ``band`` (G, BP or RP, any case; null = G): G rows are the
  light curve, BP/RP rows (``Request.bands``) only join G in the period search of a star sent
  without a period;
- folded: ``source_id, phase, mag`` with optional ``period`` and ``type``;
- the Gaia archive's INDIVIDUAL or RAW epoch-photometry layouts (``read_epoch_frame``), which
  become the long form (G, BP and RP rows, a ``band`` column) through the pipeline's own layout
  readers.

A malformed request (a missing column, a non-numeric column, a null source_id) is a
`RequestError` with a one-line message; a problem of one star (conflicting periods, an unknown
type) is kept as that star's status and never stops the others.

Examples
--------
>>> import pandas as pd
>>> req = read_request(pd.DataFrame({"source_id": [7, 7, 5], "time": [0.1, 0.3, 0.2],
...                                  "mag": [15.1, 15.4, 16.0], "type": ["RRab", None, "rrc"]}))
>>> req.form, req.stars["source_id"].tolist(), req.stars["type"].tolist()
('time', [7, 5], ['RRab', 'RRc'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.data.layouts import BANDS

TYPE_NAMES = {t.lower(): t for t in schema.TYPES}
STAR_COLUMNS = ("period", "epoch_max", "type")
EPOCH_COLUMNS = ("source_id", "time", "phase", "mag", "mag_error", "flux", "flux_error",
                 "rejected", "transit_id", "band")
USAGE = ("send one row per epoch: source_id, time, mag (optional mag_error or flux, flux_error; "
         "optional period, epoch_max, type) or source_id, phase, mag (optional period, type)")


class RequestError(ValueError):
    """The request as a whole cannot be read (the message is one line, naming the problem)."""


@dataclass(frozen=True)
class Request:
    """One request: G epochs (source_id, x, mag, mag_error, rejected) and its stars in input
    order (source_id, period, epoch_max, type as given, NaN/None when not), with per-star
    problems; `bands`: BP/RP epochs (the same columns and `band`) for the period search, None
    when none were sent."""

    form: Literal["time", "folded"]
    epochs: pd.DataFrame
    stars: pd.DataFrame
    problems: dict[int, str] = field(default_factory=dict)
    bands: pd.DataFrame | None = None

    @property
    def x_column(self) -> str:
        """'time' or 'phase': what the epochs are given in."""
        return "time" if self.form == "time" else "phase"


def column_name(name: object) -> str:
    """A user's column name as the pipeline and the model's signature spell it (any case and
    surrounding spaces accepted)."""
    return str(name).strip().lower()


def read_request(frame: pd.DataFrame) -> Request:
    """The request of a user's frame (long form or folded); RequestError when malformed."""
    if not isinstance(frame, pd.DataFrame):
        raise RequestError(f"expected a table of epochs, got {type(frame).__name__}; {USAGE}")
    df = signature_columns(frame)
    if df.columns.duplicated().any():
        raise RequestError(f"repeated column names {sorted(df.columns[df.columns.duplicated()])}")
    has_time, has_phase = "time" in df.columns, "phase" in df.columns
    if has_time and has_phase:
        raise RequestError("both 'time' and 'phase' given: send epochs in one of them")
    missing = [c for c in ("source_id", "mag") if c not in df.columns]
    if not (has_time or has_phase):
        missing.insert(1, "time (or phase)")
    if missing:
        raise RequestError(f"missing column(s) {', '.join(missing)}; {USAGE}")
    form: Literal["time", "folded"] = "time" if has_time else "folded"
    x = "time" if has_time else "phase"
    if form == "folded" and "epoch_max" in df.columns:
        raise RequestError("'epoch_max' given with folded epochs ('phase'): fold on it yourself "
                           "or send times")

    sid = _source_ids(df["source_id"])
    problems: dict[int, list[str]] = {}  # per star, in the order found

    def numbers(name: str) -> np.ndarray:
        return _numbers(df[name], name, sid, problems)

    band = _bands(df["band"]) if "band" in df.columns else None
    if band is not None and form == "folded" and (band != "G").any():
        raise RequestError("BP/RP rows sent with folded epochs ('phase'): they serve the period "
                           "search only, so send times, or G rows alone")
    epochs = pd.DataFrame({"source_id": sid, x: numbers(x), "mag": numbers("mag")})
    epochs["mag_error"] = _mag_error(df, numbers)
    epochs["rejected"] = _flags(df["rejected"]) if "rejected" in df.columns else False
    stars = _star_values(df, sid, numbers, problems)  # from every row, G or not
    bands = None
    if band is not None and (band != "G").any():
        bands = epochs[band != "G"].assign(band=band[band != "G"]).reset_index(drop=True)
        epochs = epochs[band == "G"].reset_index(drop=True)
    return Request(form=form, epochs=epochs, stars=stars,
                   problems={k: "; ".join(v) for k, v in problems.items()}, bands=bands)


def request_frame(epochs: pd.DataFrame, stars: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's long form of epochs (schema.EPOCHS rows) with the catalogue's per-star
    period, epoch of maximum and type: the request the stages send the model."""
    per_star = stars.set_index("source_id")[["period", "epoch_max", "type"]]
    joined = per_star.reindex(epochs["source_id"].to_numpy())
    return pd.DataFrame({
        "source_id": epochs["source_id"].to_numpy(np.int64), "time": epochs["time"].to_numpy(),
        "mag": epochs["mag"].to_numpy(), "flux": epochs["flux"].to_numpy(),
        "flux_error": epochs["flux_error"].to_numpy(), "rejected": epochs["rejected"].to_numpy(),
        "period": joined["period"].to_numpy(float),
        "epoch_max": joined["epoch_max"].to_numpy(float),
        "type": joined["type"].astype(object).where(joined["type"].notna(), None).to_numpy(),
    })


def signature_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its column names as the model's signature spells them (lower case), values
    unchanged: MLflow's schema check drops a column the signature does not name (`MAG`) before
    `read_request` could read it, so callers of the pyfunc send frames through this first."""
    return frame.rename(columns={c: column_name(c) for c in frame.columns})


def read_epoch_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A user's table as the long form: the Gaia INDIVIDUAL / RAW layouts through the layout
    readers (G rows first, then BP and RP rows, a `band` column; `rejected` from Gaia's flags),
    anything else unchanged. A band whose columns are missing (a RAW extract with G only) is
    left out."""
    from rrlfeh.data.layouts import LayoutError, detect_layout, to_epochs

    try:
        layout = detect_layout(frame)
    except LayoutError:
        return frame
    try:
        epochs = [to_epochs(frame, layout).assign(band="G")]
    except LayoutError as exc:
        raise RequestError(f"Gaia {layout.upper()} epoch photometry: {exc}") from exc
    epochs += [e for band in BANDS[1:] if (e := _band_rows(frame, band)) is not None]
    return pd.concat(epochs, ignore_index=True).drop(columns=["transit_id"])


def _band_rows(frame: pd.DataFrame, band: str) -> pd.DataFrame | None:
    """The BP or RP epochs of an archive-layout frame (`layouts.to_epochs`), None where the
    frame lacks that band's columns or rows."""
    from rrlfeh.data.layouts import RAW_BAND_COLUMNS, to_epochs

    have = {column_name(c) for c in frame.columns}
    if "band" not in have and not set(RAW_BAND_COLUMNS[band]) <= have:
        return None  # a RAW extract without this band's columns
    try:
        rows = to_epochs(frame, band=band)
    except KeyError:  # RAW with one array a cell: the exploder keeps the G columns alone
        return None
    except ValueError as exc:  # LayoutError, a bad flag or identifier, as in G
        raise RequestError(f"Gaia {band} epoch photometry: {exc}") from exc
    return rows.assign(band=band) if len(rows) else None


def _bands(values: pd.Series) -> np.ndarray:
    """Each row's band, 'G', 'BP' or 'RP' (any case, null or empty = G); another value makes
    the request unreadable."""
    text = values.map(lambda v: v.decode() if isinstance(v, bytes) else v).astype("string")
    text = text.str.strip().str.upper().fillna("G").replace("", "G")
    unknown = sorted(set(text) - set(BANDS))
    if unknown:
        raise RequestError(f"unknown band value(s) {unknown[:5]} in column 'band': "
                           f"use {', '.join(BANDS)} (or leave it empty for G)")
    return text.to_numpy(dtype=object)


def _source_ids(values: pd.Series) -> np.ndarray:
    """int64 star ids; nulls or non-integers make the request unreadable."""
    if values.isna().any():
        raise RequestError(f"source_id is null in {int(values.isna().sum())} row(s): every epoch "
                           "needs the id of its star")
    try:
        num = pd.to_numeric(values, errors="raise")
    except (TypeError, ValueError) as exc:
        raise RequestError(f"source_id is not an integer: {_first_bad(values)}") from exc
    if num.dtype.kind == "f" and not np.all(np.mod(num.to_numpy(), 1) == 0):
        raise RequestError(f"source_id is not an integer: {_first_bad(values)}")
    big = num.map(lambda v: not -2**63 <= int(v) < 2**63) if num.dtype.kind in "uO" else None
    if big is not None and big.any():  # a Gaia source_id fits int64; beyond it, ids would wrap
        raise RequestError(f"source_id beyond the 64-bit range of Gaia ids in {int(big.sum())} "
                           f"row(s), the first row {int(np.flatnonzero(big.to_numpy())[0])}")
    return num.astype(np.int64).to_numpy()


def _first_bad(values: pd.Series) -> str:
    """The first value of a column that is not an integer, for the message."""
    for v in values:
        try:
            if float(v) == int(float(v)):
                continue
        except (TypeError, ValueError, OverflowError):
            pass
        return repr(v)[:40]
    return "?"


def _numbers(values: pd.Series, name: str, sid: np.ndarray,
             problems: dict[int, list[str]]) -> np.ndarray:
    """A numeric column as float64 (nulls NaN). A cell that is not a number (text, a list) is
    NaN too, and its star gets the problem: that star alone is not scored, the others are."""
    if values.dtype.kind in "biuf":
        return values.to_numpy(dtype="float64", na_value=np.nan)
    num = pd.to_numeric(values, errors="coerce").astype("float64")
    text = np.array(values.notna() & num.isna(), dtype=bool)  # a writable copy
    text[text] = [not _is_number(v) for v in values[text]]
    for s in pd.unique(sid[text]):
        cells = values[text & (sid == s)]
        problems.setdefault(int(s), []).append(
            f"{name} is not a number in {len(cells)} row(s) (e.g. {str(cells.iloc[0])[:40]!r})")
    return num.to_numpy()


def _is_number(v: object) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return v is None
    return True


def _mag_error(df: pd.DataFrame, numbers) -> np.ndarray:
    """Per-epoch magnitude error: `mag_error`, else from `flux, flux_error`, else NaN
    (`numbers`: the request's reader of a numeric column)."""
    if "mag_error" in df.columns:
        return numbers("mag_error")
    if "flux" in df.columns and "flux_error" in df.columns:
        return schema.mag_error(pd.DataFrame({"flux": numbers("flux"),
                                              "flux_error": numbers("flux_error")}))
    return np.full(len(df), np.nan)


def _flags(values: pd.Series) -> np.ndarray:
    """A boolean column (null = not flagged); anything else makes the request unreadable."""
    from rrlfeh.data.layouts import LayoutError, _flag

    try:
        return _flag(values).to_numpy(bool)
    except (LayoutError, TypeError, ValueError) as exc:
        raise RequestError(f"column 'rejected' is not a boolean flag: {exc}") from exc


def _star_values(df: pd.DataFrame, sid: np.ndarray, numbers,
                 problems: dict[int, list[str]]) -> pd.DataFrame:
    """One row per star, in order of first appearance, with the per-star values it was given
    (conflicting or unknown values added to `problems`)."""
    ids = pd.unique(sid)
    stars = pd.DataFrame({"source_id": ids})
    for col in ("period", "epoch_max"):
        if col not in df.columns:
            stars[col] = np.nan
            continue
        values = pd.Series(numbers(col), name=col)
        stars[col] = _one_per_star(values, sid, ids, col, problems)
    if "type" in df.columns:
        # spelled out once per distinct value, not per row (a few values on 100,000 rows),
        # and each row's spelling as a number: equal spellings, equal numbers
        codes, distinct = pd.factorize(df["type"])
        raw = pd.Series(np.asarray(distinct, dtype=object), dtype=object).astype("string")
        raw = raw.str.strip()
        canon = raw.str.lower().map(TYPE_NAMES).fillna(raw).replace("", pd.NA)
        spelling, names = pd.factorize(canon)  # a null spelling: -1
        number = np.append(spelling, -1)[codes].astype(float)  # code -1 (a null row): the last
        number[number < 0] = np.nan
        given = _one_per_star(pd.Series(number), sid, ids, "type", problems,
                              labels=np.asarray(names, dtype=object))
        types = []
        for s, t in zip(ids, given, strict=True):
            if t is None or pd.isna(t) or t == "":
                types.append(None)
            elif str(t).lower() in TYPE_NAMES:
                types.append(TYPE_NAMES[str(t).lower()])
            else:
                types.append(None)
                known = " and ".join(schema.TYPES)
                problems.setdefault(int(s), []).append(
                    f"unknown type {str(t)[:20]!r} (this model scores {known})")
        stars["type"] = pd.Series(types, dtype=object)
    else:
        stars["type"] = pd.Series([None] * len(ids), dtype=object)
    return stars


def _one_per_star(values: pd.Series, sid: np.ndarray, ids: np.ndarray, name: str,
                  problems: dict[int, list[str]], labels: np.ndarray | None = None) -> list:
    """The number each star was given (first non-null); differing values are a star's problem.
    With `labels`, the numbers stand for labels[number], and messages and the answer spell
    them out."""
    frame = pd.DataFrame({"sid": sid, "v": values.to_numpy()}).dropna()
    distinct = frame.drop_duplicates()
    conflict = distinct["sid"].duplicated(keep=False)
    for s in pd.unique(distinct.loc[conflict, "sid"]):
        seen = distinct.loc[distinct["sid"] == s, "v"].tolist()[:3]
        if labels is not None:
            seen = [labels[int(v)] for v in seen]
        problems.setdefault(int(s), []).append(f"conflicting {name} values {seen}")
    first = distinct.drop_duplicates("sid").set_index("sid")["v"]
    out = first.reindex(ids)
    if labels is not None:
        return [None if pd.isna(v) else labels[int(v)] for v in out.tolist()]
    return out.to_numpy(float).tolist()
