"""rrlfeh.io: a file is either the old one or the complete new one, and no temporary is left."""

from __future__ import annotations

import json

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
