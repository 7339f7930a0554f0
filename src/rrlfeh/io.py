"""Crash-safe writing of stage outputs: a file is either the old one or the complete new one.

`atomic_path` is the one way a file is written: every writer here, and the model, npz and figure
savers elsewhere, write to a temporary name beside the target and rename it into place.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so savers that go by the suffix pick the
    right format); on success rename it onto `path`, on failure remove it. Makes the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write `df` to `path` atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as indented, strict JSON (DVC metrics) atomically: a missing number (NaN,
    ±inf) is null, as every JSON parser reads it."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False,
                                  default=_jsonable) + "\n")
    return Path(path)


def strict_json(value: Any) -> Any:
    """`value` with every non-finite float (Python's or numpy's, in any nesting of dicts,
    lists, tuples and arrays) as None, and numpy scalars and arrays as plain values."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """A result table as .parquet or .csv (6 significant digits, by the suffix), atomically; the
    one writer of scored tables."""
    if Path(path).suffix.lower() == ".parquet":
        return write_parquet(df, path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file (a report) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _jsonable(value: Any) -> Any:
    """numpy scalars and paths in metrics become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
