"""Readers for the Dekany & Grebel 2022 (DG22) benchmark: pre-folded Gaia DR2 G light curves
straight from their tar.gz (no extraction), their [Fe/H] labels and the peer model's predictions.

All source_ids here are Gaia DR2 ids (the files say so); they are not DR3 ids.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from rrlfeh.data.schema import LABELS, conform
from rrlfeh.reasons import first_of

CURVE_NAME = re.compile(r"(?:^|/)(\d+)_bin\.dat$")


def read_dg22_curves(path: Path | str, *, max_stars: int | None = None,
                     drop_wrapped_copies: bool = True) -> pd.DataFrame:
    """Every `<dr2 id>_bin.dat` in the tar.gz as flat columns (source_id, phase, mag), one row per
    point, each star's points contiguous and in file order.

    Each file holds whitespace-separated (phase, G mag) pairs. The real files repeat the start of
    the cycle after phase 1 (points at phase p + 1 copying those at p, up to phase ~1.2): with
    `drop_wrapped_copies` those exact copies are removed (phase >= 1 points that are not copies
    stay). NB: in these files maximum light sits near phase 0.6-0.7, not 0 (see
    preprocess_folded(align_max=True)). A file with an odd number of values, non-numeric text or no
    points, an unexpected file name or a repeated id raises a ValueError naming the file.
    `max_stars` stops after that many files (for quick looks).
    """
    ids: list[int] = []
    blobs: list[bytes] = []
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if member.isdir():
                continue
            match = CURVE_NAME.search(member.name)
            if not member.isfile() or match is None:
                raise ValueError(f"{path}: unexpected member {member.name!r} "
                                 "(want lc_dev_g/<id>_bin.dat files)")
            handle = tar.extractfile(member)
            ids.append(int(match.group(1)))
            blobs.append(handle.read() if handle is not None else b"")
            if max_stars is not None and len(ids) >= max_stars:
                break
    tokens = [blob.split() for blob in blobs]
    counts = np.array([len(tok) for tok in tokens], dtype=np.int64)
    for sid, n in zip(ids, counts, strict=True):
        if n == 0 or n % 2:
            raise ValueError(f"{path}: {sid}_bin.dat has {n} values, want a positive even number "
                             "(phase, mag pairs)")
    id_array = np.asarray(ids, dtype=np.int64)
    if np.unique(id_array).size != id_array.size:
        seen, dup_counts = np.unique(id_array, return_counts=True)
        raise ValueError(f"{path}: repeated ids {first_of(seen[dup_counts > 1], 5)}")
    values = _parse_floats(tokens, ids, path)
    out = pd.DataFrame({"source_id": np.repeat(id_array, counts // 2),
                        "phase": values[0::2], "mag": values[1::2]})
    if drop_wrapped_copies:
        out = out.loc[~_wrapped_copies(out)].reset_index(drop=True)
    return out


def _wrapped_copies(df: pd.DataFrame, decimals: int = 6) -> np.ndarray:
    """Rows at phase >= 1 that repeat, at phase - 1, a row of the same star (to `decimals`)."""
    phase_key = np.rint(df["phase"].to_numpy() * 10**decimals).astype(np.int64)
    mag_key = np.rint(df["mag"].to_numpy() * 10**decimals).astype(np.int64)
    high = phase_key >= 10**decimals
    base = pd.MultiIndex.from_arrays([df["source_id"].to_numpy()[~high], phase_key[~high],
                                      mag_key[~high]])
    shifted = pd.MultiIndex.from_arrays([df["source_id"].to_numpy()[high],
                                         phase_key[high] - 10**decimals, mag_key[high]])
    copies = np.zeros(len(df), bool)
    copies[np.flatnonzero(high)] = shifted.isin(base)
    return copies


def read_dg22_labels(path: Path | str) -> pd.DataFrame:
    """labels_dev.csv (source_id_dr2, feh) as the labels schema; feh_error is NaN (not given)."""
    raw = pd.read_csv(path)
    _require(raw, ("source_id_dr2", "feh"), path)
    return conform(raw.rename(columns={"source_id_dr2": "source_id"}), LABELS, "dg22 labels")


def read_dg22_peer_predictions(path: Path | str) -> pd.DataFrame:
    """peer_bilstm_oof_dev.csv: the published BiLSTM's out-of-fold predictions as
    (source_id [DR2], fold, feh_pred)."""
    raw = pd.read_csv(path)
    _require(raw, ("source_id_dr2", "fold", "feh_pred"), path)
    return pd.DataFrame({"source_id": raw["source_id_dr2"].astype("int64"),
                         "fold": raw["fold"].astype("int64"),
                         "feh_pred": raw["feh_pred"].astype("float64")})


def _parse_floats(tokens: list[list[bytes]], ids: list[int], path) -> np.ndarray:
    """All tokens as one float array; on bad text, find and name the offending file."""
    flat = [t for tok in tokens for t in tok]
    try:
        return np.array(flat, dtype=bytes).astype(float)
    except ValueError:
        for sid, tok in zip(ids, tokens, strict=True):
            try:
                np.array(tok, dtype=bytes).astype(float)
            except ValueError as err:
                raise ValueError(f"{path}: {sid}_bin.dat: {err}") from None
        raise


def _require(df: pd.DataFrame, columns: tuple[str, ...], path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (have {list(df.columns)})")
