"""Crash-safe writing of stage outputs: a file is either the old one or the complete new one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write `df` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    _replace(tmp, path)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as indented JSON (DVC metrics) through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")
    _replace(tmp, path)
    return path


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """A result table as .parquet or .csv (6 significant digits, by the suffix), through a
    temporary file and a rename; the one writer of scored tables."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return write_parquet(df, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    _replace(tmp, path)
    return path


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file (a report) through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    _replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    """numpy scalars and paths in metrics become plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
