"""rrlfeh.io: a file is either the old one or the complete new one, and no temporary is left."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rrlfeh.io import atomic_path, write_json, write_table


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_json({"r2": 0.5}, path)
    with pytest.raises(RuntimeError, match="crash"), atomic_path(path) as tmp:
        tmp.write_text('{"r2": ')  # half a file, then the writer dies
        raise RuntimeError("crash")
    assert json.loads(path.read_text()) == {"r2": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_temporary_keeps_the_suffix_and_the_folder_is_made(tmp_path):
    path = tmp_path / "new" / "figure.png"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.suffix == ".png" and tmp != path
        tmp.write_bytes(b"png")
    assert path.read_bytes() == b"png"


def test_write_table_by_suffix(tmp_path):
    df = pd.DataFrame({"source_id": [1, 2], "feh": [-1.234567891, -0.5]})
    csv = write_table(df, tmp_path / "t.csv").read_text().splitlines()
    assert csv == ["source_id,feh", "1,-1.23457", "2,-0.5"]
    pd.testing.assert_frame_equal(pd.read_parquet(write_table(df, tmp_path / "t.parquet")), df)


def test_write_json_is_strict_json_with_null_for_missing_numbers(tmp_path):
    """NaN and ±inf (Python's and numpy's, nested anywhere) are written as null, and the file
    parses with a parser that refuses the non-standard tokens."""
    obj = {"a": float("nan"), "b": [1.5, np.float32("inf"), {"c": -np.inf}],
           "d": np.array([0.25, np.nan]), "e": (np.int64(3), "text"), "f": np.float64(2.0)}
    path = write_json(obj, tmp_path / "m.json")

    def refuse(token):
        raise ValueError(token)

    got = json.loads(path.read_text(), parse_constant=refuse)
    assert got == {"a": None, "b": [1.5, None, {"c": None}], "d": [0.25, None],
                   "e": [3, "text"], "f": 2.0}
