"""Gaia DR3 epoch photometry, in either of the archive's layouts, to the canonical epochs table.

The archive serves EPOCH_PHOTOMETRY as INDIVIDUAL (one row per transit and band, a `band` column)
or RAW (one row per source, G/BP/RP arrays; often already exploded to one row per transit).
Both become `schema.EPOCHS`, one band at a time (G by default: the light curve the pipeline fits;
BP and RP give independent periods of the same stars, `rrlfeh.lightcurve.agreement`), every
transit kept, with `rejected` marking those rejected by variability or photometry or with a
null/non-finite time, mag or flux.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.reasons import first_of

Layout = Literal["individual", "raw"]

INDIVIDUAL_COLUMNS: tuple[str, ...] = (
    "source_id", "transit_id", "band", "time", "mag", "flux", "flux_error",
    "rejected_by_photometry", "rejected_by_variability",
)
RAW_COLUMNS: tuple[str, ...] = (
    "source_id", "transit_id", "g_transit_time", "g_transit_mag", "g_transit_flux",
    "g_transit_flux_error", "variability_flag_g_reject", "rejected_by_photometry",
)
# Per-transit RAW columns (arrays, one row per source) that are exploded together to rows.
_RAW_ARRAY_COLUMNS: tuple[str, ...] = RAW_COLUMNS[1:]
# BP and RP per-transit arrays (bp_obs_time, bp_mag, ..., variability_flag_bp_reject, ...)
_OTHER_BAND_PREFIXES: tuple[str, ...] = ("bp_", "rp_", "variability_flag_bp",
                                         "variability_flag_rp")

VOTABLE_SUFFIXES: tuple[str, ...] = (".xml", ".vot", ".votable")

BANDS = ("G", "BP", "RP")
# RAW-layout columns per band: time, mag, flux, flux_error, the band's variability rejection flag
RAW_BAND_COLUMNS: dict[str, tuple[str, str, str, str, str]] = {
    "G": ("g_transit_time", "g_transit_mag", "g_transit_flux", "g_transit_flux_error",
          "variability_flag_g_reject"),
    "BP": ("bp_obs_time", "bp_mag", "bp_flux", "bp_flux_error", "variability_flag_bp_reject"),
    "RP": ("rp_obs_time", "rp_mag", "rp_flux", "rp_flux_error", "variability_flag_rp_reject"),
}


class LayoutError(ValueError):
    """Epoch photometry whose columns or values fit neither Gaia layout."""


def detect_layout(df: pd.DataFrame) -> Layout:
    """Say which Gaia epoch-photometry layout `df` is in ('individual' or 'raw').

    Column names are matched case-insensitively; an error lists what is there and what is missing.
    """
    have = {str(c).lower() for c in df.columns}
    fits = {
        "individual": [c for c in INDIVIDUAL_COLUMNS if c not in have],
        "raw": [c for c in RAW_COLUMNS if c not in have],
    }
    matches = [name for name, missing in fits.items() if not missing]
    if len(matches) == 1:
        return matches[0]  # type: ignore[return-value]
    if len(matches) == 2:
        raise LayoutError("epoch photometry has the columns of both the INDIVIDUAL and the RAW "
                          f"layout; cannot tell which to use (columns {sorted(have)})")
    raise LayoutError(
        "epoch photometry is in neither Gaia layout: "
        f"INDIVIDUAL lacks {fits['individual']}, RAW lacks {fits['raw']} "
        f"(columns present: {sorted(have)})")


def to_epochs(df: pd.DataFrame, layout: Layout | None = None, band: str = "G") -> pd.DataFrame:
    """Canonical epochs table (schema.EPOCHS) of one band (G, BP or RP) from epoch photometry
    in either layout.

    `layout` is detected when not given. Rows come out sorted by (source_id, transit_id);
    rejected rows are kept with rejected=True.
    """
    band = band.upper()
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    df = df.rename(columns={c: str(c).lower() for c in df.columns})
    layout = layout or detect_layout(df)
    if layout == "individual":
        names = (df["band"].map(_band_name) if df["band"].dtype == object
                 else df["band"].astype("string").str.strip().str.upper())
        g = df.loc[names == band]
        cols = {"time": g["time"], "mag": g["mag"], "flux": g["flux"],
                "flux_error": g["flux_error"]}
        flags = _flag(g["rejected_by_variability"]) | _flag(g["rejected_by_photometry"])
    elif layout == "raw":
        columns = RAW_BAND_COLUMNS[band]
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise LayoutError(f"RAW epoch photometry has no {band} columns {missing}")
        g = explode_raw(df)
        cols = dict(zip(("time", "mag", "flux", "flux_error"), (g[c] for c in columns[:4]),
                        strict=True))
        flags = _flag(g[columns[4]]) | _flag(g["rejected_by_photometry"])
    else:
        raise LayoutError(f"unknown layout {layout!r}; expected 'individual' or 'raw'")

    out = pd.DataFrame({"source_id": _ids(g["source_id"], "source_id"),
                        "transit_id": _ids(g["transit_id"], "transit_id")})
    for name, values in cols.items():
        out[name] = _floats(values, name)
    bad_value = ~np.isfinite(out[["time", "mag", "flux"]].to_numpy()).all(axis=1)
    out["rejected"] = flags.to_numpy(bool) | bad_value
    _check_unique_transits(out, band)
    out = out.sort_values(["source_id", "transit_id"], kind="stable")
    return schema.conform(out, schema.EPOCHS, "epochs" if band == "G" else f"{band} epochs")


def explode_raw(df: pd.DataFrame) -> pd.DataFrame:
    """RAW layout with one row per transit: explodes per-source arrays if the cells hold arrays.

    Already exploded input (scalar cells, as in the shared parquet file) is returned unchanged.
    """
    sample = df["g_transit_time"].dropna()
    if sample.empty or not isinstance(sample.iloc[0], (list, tuple, np.ndarray)):
        return df
    # G's arrays, and BP's and RP's where the table has them as one value per transit
    lengths = df["transit_id"].map(len)
    arrays = [*_RAW_ARRAY_COLUMNS, *(c for c in df.columns
                                     if c.startswith(_OTHER_BAND_PREFIXES)
                                     and c not in _RAW_ARRAY_COLUMNS
                                     and df[c].map(_length).equals(lengths))]
    for col in arrays:
        if col != "transit_id" and not df[col].map(_length).equals(lengths):
            bad = first_of(df.loc[df[col].map(_length) != lengths, "source_id"], 5)
            raise LayoutError(f"RAW epoch photometry: array {col!r} does not have one value per "
                              f"transit for source_id {bad}")
    df = df[["source_id", *arrays]].copy()
    for col in arrays:
        df[col] = df[col].map(_unmask)
    return df.explode(arrays, ignore_index=True)


def _unmask(cell: object) -> object:
    """A VOTable array cell as a plain array: masked floats NaN, masked flags False, other masked
    values None (so a null identifier is caught later instead of becoming a number)."""
    if not isinstance(cell, np.ma.MaskedArray):
        return cell
    if cell.dtype.kind == "f":
        return cell.filled(np.nan)
    if cell.dtype.kind == "b":
        return cell.filled(False)
    if not np.ma.is_masked(cell):
        return cell.data
    return np.array([None if m else v for v, m in zip(cell.data.tolist(),
                                                      np.ma.getmaskarray(cell), strict=True)],
                    dtype=object)


def read_epoch_photometry(path: str | Path) -> pd.DataFrame:
    """Epochs table from a parquet, csv, VOTable (.xml/.vot) or FITS file in either layout.

    A file without a G epoch row, or whose columns fit neither layout, is an error naming it.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise LayoutError(f"{path}: no epoch rows (empty file, 0 bytes)")
    table = read_table(path)  # its errors name the file
    if table.empty:
        raise LayoutError(f"{path}: no epoch rows (the file has only a header)")
    try:
        epochs = to_epochs(table)
    except (ValueError, TypeError) as err:  # LayoutError, SchemaError, a non-integer id
        raise LayoutError(f"{path}: {err}") from err
    if epochs.empty:
        raise LayoutError(f"{path}: no G-band epoch rows (of {len(table)} rows)")
    return epochs


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table file by its suffix into a DataFrame (parquet, csv, VOTable, FITS)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise LayoutError(f"{path}: empty file (0 bytes), no rows")
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in VOTABLE_SUFFIXES:
        from astropy.io import votable

        tables = [t.to_table() for t in votable.parse(str(path)).iter_tables()]
        return astropy_to_pandas(tables, str(path))
    if suffix in (".fits", ".fit"):
        from astropy.table import Table

        return astropy_to_pandas([Table.read(path)], str(path))
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .parquet, .csv, "
                     f"{', '.join(VOTABLE_SUFFIXES)} or .fits")


def _read_csv(path: Path) -> pd.DataFrame:
    """A comma-separated file; one ';'- or tab-separated is an error saying so (the columns
    would otherwise run together into one and every later message would be about that)."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise LayoutError(f"{path}: not a readable CSV file ({str(err).strip()})") from err
    if df.shape[1] == 1:
        header = str(df.columns[0])
        for sep, name in ((";", "semicolon"), ("\t", "tab")):
            if sep in header:
                raise LayoutError(f"{path}: {name}-separated (header {header[:60]!r}); "
                                  "rrlfeh reads comma-separated CSV with '.' decimals")
    return df


def astropy_to_pandas(tables: list, origin: str) -> pd.DataFrame:
    """Concatenate astropy Tables into one DataFrame; masked (null) values become NaN/<NA>."""
    frames = [t.to_pandas() for t in tables if len(t)]
    if not frames:
        if tables:
            return tables[0].to_pandas()
        raise LayoutError(f"{origin}: holds no table")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _band_name(value: object) -> str:
    """'G' | 'BP' | 'RP' from str or bytes cells (VOTable char columns may come back as bytes)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip().upper()


def _flag(values: pd.Series) -> pd.Series:
    """Boolean flag column; null counts as not flagged. Accepts bools, 0/1 and 'true'/'false'."""
    if values.dtype == bool:
        return values
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        lowered = values.map(lambda v: v.decode() if isinstance(v, bytes) else v).astype("string")
        lowered = lowered.str.strip().str.lower()
        known = lowered.isin(["true", "false", "t", "f", "1", "0"]) | lowered.isna()
        if not known.all():
            raise LayoutError(f"flag column {values.name!r} has values that are not booleans: "
                              f"{sorted(set(lowered[~known]))[:5]}")
        return lowered.isin(["true", "t", "1"]).astype(bool)
    return values.fillna(False).astype(bool)


def _floats(values: pd.Series, name: str) -> np.ndarray:
    """Float array with nulls as NaN (handles nullable Float64 and object columns)."""
    try:
        return pd.to_numeric(values, errors="raise").astype("float64").to_numpy()
    except (TypeError, ValueError) as err:
        raise LayoutError(f"column {name!r} is not numeric: {err}") from err


def _ids(values: pd.Series, name: str) -> np.ndarray:
    """int64 identifiers; a null identifier is an error naming the column."""
    if values.isna().any():
        n_null = int(values.isna().sum())
        raise LayoutError(f"column {name!r} has null identifiers in {n_null} rows")
    try:
        return values.astype("int64").to_numpy()
    except (TypeError, ValueError) as err:
        raise LayoutError(f"column {name!r} is not an integer identifier ({err})") from err


def _length(value: object) -> int:
    """Length of an array cell (-1 for a scalar/null cell)."""
    return len(value) if isinstance(value, (list, tuple, np.ndarray)) else -1


def _check_unique_transits(out: pd.DataFrame, band: str = "G") -> None:
    """Each (source_id, transit_id) is one transit of a band; duplicates are an error naming the
    stars."""
    dup = out.duplicated(["source_id", "transit_id"], keep=False)
    if dup.any():
        stars = sorted(out.loc[dup, "source_id"].unique().tolist())
        raise LayoutError(f"duplicate {band} transits (same source_id, transit_id) for source_id "
                          f"{first_of(stars)}")
