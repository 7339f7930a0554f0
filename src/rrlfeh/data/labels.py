"""Labels: [Fe/H] catalogues in the Muraveva et al. 2025 form, read for every source.

One reader for the files and gaia sources alike. A file rrlfeh cannot use is an error naming it;
labels that cannot be read are left out with a warning and listed with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from rrlfeh.data import layouts, schema
from rrlfeh.reasons import first_of


class LabelWarning(UserWarning):
    """Labels of a catalogue were left out (the message names the source_ids and why)."""


_LABEL_ALIASES: dict[str, tuple[str, ...]] = {  # compared after lower-casing, keeping [a-z0-9]
    "source_id": ("sourceid", "source", "gaiadr3", "gaiadr3sourceid", "dr3sourceid",
                  "sourceiddr3", "gaiasourceid"),
    "feh": ("feh", "fehphot", "fehour", "metallicity", "mh"),
    "feh_error": ("feherror", "feherr", "efeh", "errfeh", "sigmafeh", "fehsigma", "efehphot",
                  "fehphoterr", "fehphoterror", "fehe", "fehunc", "uncfeh"),
}


def _alias_key(name: object) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def read_labels(path: str | Path, *,
                set_aside: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """Labels table (schema.LABELS) from a Muraveva et al. 2025-form catalogue file.

    csv, parquet, FITS or VOTable, with source_id and [Fe/H] under common names (feh, FeH,
    [Fe/H], FeH_our; errors e_FeH, feh_err, sigma_feh...). A missing error column becomes NaN.
    Gaia DR2 ids (e.g. source_id_dr2) are deliberately NOT accepted: they differ from DR3 ids.
    Labels that cannot be read are left out with a warning and, when `set_aside` is a list,
    appended to it as (source_id, reason); a file where none can be read is an error.
    """
    return labels_from_frame(layouts.read_table(path), origin=str(path), set_aside=set_aside)


_DECIMAL_COMMA = r"^[+-]?\d*,\d+$"


def labels_from_frame(df: pd.DataFrame, *, origin: str = "labels",
                      set_aside: list[pd.DataFrame] | None = None) -> pd.DataFrame:
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
    if df.empty:
        raise schema.SchemaError(f"{origin}: no label rows (the file has only a header)")
    out = pd.DataFrame({role: df[col] for role, col in chosen.items()})
    if out["source_id"].isna().any():
        raise schema.SchemaError(f"{origin}: {int(out['source_id'].isna().sum())} rows "
                                 "have no source_id")
    try:
        out["source_id"] = pd.to_numeric(out["source_id"], errors="raise").astype("int64")
    except (TypeError, ValueError) as err:
        raise schema.SchemaError(f"{origin}: column {chosen['source_id']!r} is not an integer "
                                 f"Gaia DR3 source_id ({err})") from err
    name = Path(origin).name
    why = np.full(len(out), None, dtype=object)  # the reason a label is left out, per row
    for role in [r for r in ("feh", "feh_error") if r in out.columns]:
        what, col = ("[Fe/H]" if role == "feh" else "[Fe/H] error"), chosen[role]
        text = out[role].map(lambda v: v.replace("\u2212", "-").strip()  # Unicode minus
                             if isinstance(v, str) else v)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        as_text = text.astype("string")
        unread = (values.isna() & text.notna() & (as_text.str.lower() != "nan")).to_numpy(bool)
        comma = unread & as_text.str.fullmatch(_DECIMAL_COMMA).fillna(False).to_numpy(bool)
        if unread.any() and values.isna().all():  # not one number: the file, not a star
            example = str(text[comma].iloc[0] if comma.any() else text[unread].iloc[0])
            problem = (f"decimal commas in column {col}: e.g. {example!r}; write '.' decimals"
                       if comma.any() else f"column {col} holds no number, e.g. {example!r}")
            raise schema.SchemaError(f"{origin}: no {what} could be read: {problem}")
        missing = ~unread & ~np.isfinite(values.to_numpy()) if role == "feh" else ~unread & False
        for mask, reason in ((comma, f"label {what} not a number (decimal comma, in {name})"),
                             (unread, f"label {what} not a number (in {name})"),
                             (missing, f"label {what} missing or not finite (in {name})")):
            why[mask & pd.isna(why)] = reason
        out[role] = values
    if not np.isfinite(out["feh"].to_numpy()).any():
        raise schema.SchemaError(f"{origin}: no [Fe/H] could be read: column {chosen['feh']} "
                                 f"is empty or not finite in all {len(out)} rows")
    bad = pd.notna(why)
    if bad.any():
        ids = out.loc[bad, "source_id"].tolist()
        warnings.warn(f"{origin}: rejected {len(ids)} labels with a null or non-numeric [Fe/H] "
                      f"or [Fe/H] error: source_id {first_of(ids, 20)}",
                      LabelWarning, stacklevel=2)
        if set_aside is not None:
            set_aside.append(pd.DataFrame({"source_id": out.loc[bad, "source_id"].to_numpy(),
                                           "reason": why[bad]}))
        out = out.loc[~bad]
    dup = out["source_id"].duplicated(keep=False)
    if dup.any():
        raise schema.SchemaError(f"{origin}: source_id repeated: "
                                 f"{first_of(sorted(set(out.loc[dup, 'source_id'].tolist())))}")
    return schema.conform(out, schema.LABELS, "labels")
