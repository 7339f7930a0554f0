"""DG22 readers: the tiny fixture in the real tar format, corrupted tars, and the real file."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from rrlfeh.data.dg22 import read_dg22_curves, read_dg22_labels, read_dg22_peer_predictions
from rrlfeh.data.schema import LABELS

FIXTURE = Path(__file__).parent / "data" / "dg22"
IDS = [1000000000000000001, 1000000000000000002, 1000000000000000003]


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return path


def test_fixture_curves_flat_and_wrapped_copies_dropped():
    df = read_dg22_curves(FIXTURE / "lc_dev_g.tar.gz")
    assert list(df.columns) == ["source_id", "phase", "mag"]
    assert df["source_id"].dtype == np.int64
    sizes = df.groupby("source_id", sort=False).size().to_dict()
    assert sizes == dict(zip(IDS, [30, 20, 14], strict=True))
    assert df["phase"].between(0, 1, inclusive="left").all()
    raw = read_dg22_curves(FIXTURE / "lc_dev_g.tar.gz", drop_wrapped_copies=False)
    assert len(raw) > len(df) and raw["phase"].max() > 1.0


def test_max_stars_stops_early():
    df = read_dg22_curves(FIXTURE / "lc_dev_g.tar.gz", max_stars=2)
    assert df["source_id"].unique().tolist() == IDS[:2]


def test_labels_and_peer_predictions():
    labels = read_dg22_labels(FIXTURE / "labels_dev.csv")
    assert list(labels.columns) == list(LABELS)
    assert labels["source_id"].tolist() == IDS[:2]
    assert labels["feh"].tolist() == [-1.43, -0.95]
    assert labels["feh_error"].isna().all()
    peer = read_dg22_peer_predictions(FIXTURE / "peer_bilstm_oof_dev.csv")
    assert peer.to_dict("list") == {"source_id": IDS[:2], "fold": [0, 3],
                                    "feh_pred": [-1.30, -1.01]}


@pytest.mark.parametrize(("files", "message"), [
    ({"lc_dev_g/5_bin.dat": b"0.1 16.0\n0.2\n"}, "5_bin.dat has 3 values"),
    ({"lc_dev_g/5_bin.dat": b"0.1 16.0\n0.2 abc\n"}, "5_bin.dat: could not convert"),
    ({"lc_dev_g/5_bin.dat": b""}, "5_bin.dat has 0 values"),
    ({"lc_dev_g/notes.txt": b"hello"}, "unexpected member 'lc_dev_g/notes.txt'"),
])
def test_corrupted_tar_names_the_file(tmp_path, files, message):
    path = _tar(tmp_path / "bad.tar.gz", {"lc_dev_g/4_bin.dat": b"0.5 15.0\n", **files})
    with pytest.raises(ValueError, match=message):
        read_dg22_curves(path)


def test_labels_missing_column(tmp_path):
    (tmp_path / "l.csv").write_text("source_id,feh\n1,-1\n")
    with pytest.raises(ValueError, match="source_id_dr2"):
        read_dg22_labels(tmp_path / "l.csv")


@pytest.mark.realdata
def test_real_dg22_file(shared_data):
    path = shared_data / "dg22"
    df = read_dg22_curves(path / "lc_dev_g.tar.gz")
    sizes = df.groupby("source_id").size()
    assert sizes.size == 13_323
    assert sizes.min() >= 12
    assert (df["phase"] < 1).all()
    labels = read_dg22_labels(path / "labels_dev.csv")
    assert len(labels) == 3_558 and labels["source_id"].isin(sizes.index).all()
    peer = read_dg22_peer_predictions(path / "peer_bilstm_oof_dev.csv")
    assert set(peer["source_id"]) == set(labels["source_id"])
