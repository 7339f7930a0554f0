"""Bad input as a new user makes it, through the real `rrlfeh acquire` (source `files`).

An empty epochs file and a label file with decimal commas used to end `acquire` with 0 stars or
0 labels and exit 0; each must stop with a one-line error naming the file and the problem. A
label file where only some [Fe/H] cannot be read keeps the others, and the stars whose label was
left out are in data/raw/rejected.parquet with the reason.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rrlfeh.data import layouts
from rrlfeh.data.labels import LabelWarning, read_labels
from rrlfeh.data.synthetic import generate

from conftest import BIN, REPO, project_env

GAIA_RAW = REPO / "tests/data/gaia/raw_epochs.csv"  # 3 stars in the archive's RAW layout
LABELS = REPO / "tests/data/quality/labels.csv"


def acquire(tmp_path: Path, epochs: Path, labels: Path, stars: Path | None = None):
    """`rrlfeh acquire` as a user runs it: the project's params.yaml, copied, set to the files."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["acquire"]["source"] = "files"
    params["acquire"]["files"].update(epochs=str(epochs), labels=str(labels),
                                      stars=None if stars is None else str(stars))
    params["acquire"]["derive"]["n_jobs"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run([str(BIN / "rrlfeh"), "acquire", "--params", "params.yaml",
                           "--metrics", "acquire.json"], cwd=tmp_path, env=project_env(),
                          capture_output=True, text=True, timeout=300)


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one-line error of a failed stage (stderr's last line), checked to be alone."""
    assert res.returncode != 0, f"expected a failure, got exit 0:\n{res.stderr}"
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("rrlfeh acquire: error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["header_csv", "zero_bytes_parquet"])
def test_an_empty_epochs_file_is_an_error_naming_it(tmp_path, kind):
    if kind == "header_csv":
        path = tmp_path / "epochs.csv"
        path.write_text(GAIA_RAW.read_text().splitlines()[0] + "\n")
    else:
        path = tmp_path / "epochs.parquet"
        path.write_bytes(b"")
    res = acquire(tmp_path, path, LABELS)
    line = error_line(res)
    assert str(path) in line and "no epoch rows" in line, line
    assert not (tmp_path / "data/raw/stars.parquet").exists()


@pytest.mark.parametrize("text", [
    'source_id,feh,feh_error\n4000000000000000001,"-1,23","0,20"\n'
    '4000000000000000002,"\u22121,50","0,10"\n',                     # quoted, Unicode minus
    "source_id;feh;feh_error\n4000000000000000001;-1,23;0,20\n",      # a spreadsheet's export
])
def test_decimal_commas_in_the_labels_are_an_error_naming_the_file(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    line = error_line(acquire(tmp_path, GAIA_RAW, path))
    assert str(path) in line, line
    if "," in text.splitlines()[0]:
        assert "decimal commas in column feh: e.g. '-1,23'" in line, line
    else:
        assert "semicolon-separated" in line and "'.' decimals" in line, line


def test_some_unreadable_labels_are_rejected_stars_with_the_reason(tmp_path):
    """Six synthetic stars with a complete stars table (nothing to derive); three labels are
    unreadable, each in its own way: exit 0, the three in rejected.parquet with why."""
    s = generate(6, seed=3)
    epochs = s.epochs.assign(band="G", rejected_by_photometry=False,
                             rejected_by_variability=s.epochs["rejected"])
    epochs.drop(columns="rejected").to_csv(tmp_path / "epochs.csv", index=False)
    s.stars.to_csv(tmp_path / "stars.csv", index=False)
    ids = s.stars["source_id"].to_numpy()
    feh = [f"{v:.3f}" for v in s.labels.set_index("source_id").reindex(ids)["feh"]]
    bad = {ids[1]: ('"' + feh[1].replace(".", ",") + '"', "decimal comma"),
           ids[3]: ("metal-poor", "not a number"), ids[4]: ("", "missing")}
    rows = [f"{i},{bad[i][0] if i in bad else f},0.1" for i, f in zip(ids, feh, strict=True)]
    (tmp_path / "labels.csv").write_text("source_id,feh,feh_error\n" + "\n".join(rows) + "\n")
    res = acquire(tmp_path, tmp_path / "epochs.csv", tmp_path / "labels.csv",
                  tmp_path / "stars.csv")
    assert res.returncode == 0, res.stderr
    assert "labels.csv: rejected 3 labels" in res.stderr
    raw = tmp_path / "data/raw"
    labels = pd.read_parquet(raw / "labels.parquet")
    assert sorted(labels["source_id"]) == sorted(set(ids) - set(bad))
    assert len(pd.read_parquet(raw / "stars.parquet")) == 6  # kept, scored unlabelled
    rejected = pd.read_parquet(raw / "rejected.parquet").set_index("source_id")
    assert sorted(rejected.index) == sorted(bad)
    for sid, (_, why) in bad.items():
        assert why in rejected.loc[sid, "reason"] and "labels.csv" in rejected.loc[sid, "reason"]


@pytest.mark.parametrize(("name", "text", "names"), [
    ("header.csv", "source_id,feh,feh_error\n", "no label rows"),
    ("empty.csv", "", "empty file (0 bytes)"),
    ("tabs.csv", "source_id\tfeh\n1\t-1.2\n", "tab-separated"),
    ("words.csv", "source_id,feh\n1,poor\n2,rich\n", "column feh holds no number, e.g. 'poor'"),
    ("nulls.csv", "source_id,feh\n1,\n2,\n", "is empty or not finite in all 2 rows"),
    ("ids.csv", "source_id,feh\nGaia DR3 1,-1.2\n", "not an integer Gaia DR3 source_id"),
    ("errors.csv", 'source_id,feh,e_feh\n1,-1.2,"0,1"\n', "decimal commas in column e_feh"),
])
def test_other_unreadable_label_files_are_errors_naming_them(tmp_path, name, text, names):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        read_labels(path)
    assert str(path) in str(err.value) and names in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_unicode_minus_is_read_and_a_partial_problem_is_per_star(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text('source_id,feh\n1,\u22121.25\n2,"-1,5"\n3,inf\n')
    sink: list[pd.DataFrame] = []
    with pytest.warns(LabelWarning, match=r"source_id \[2, 3\]"):
        labels = read_labels(path, set_aside=sink)
    assert labels["source_id"].tolist() == [1] and labels["feh"].tolist() == [-1.25]
    why = dict(zip(sink[0]["source_id"], sink[0]["reason"], strict=True))
    assert "decimal comma" in why[2] and "missing or not finite" in why[3]


def raw_table() -> pd.DataFrame:
    return pd.read_csv(GAIA_RAW)


@pytest.mark.parametrize(("name", "write", "names"), [
    ("nomag.csv", lambda p: raw_table().drop(columns="g_transit_mag").to_csv(p, index=False),
     "RAW lacks ['g_transit_mag']"),
    ("semi.csv", lambda p: raw_table().to_csv(p, sep=";", index=False), "semicolon-separated"),
    ("textmag.csv", lambda p: raw_table().assign(g_transit_mag="bright").to_csv(p, index=False),
     "column 'mag' is not numeric"),
    ("textid.csv", lambda p: raw_table().assign(source_id="Gaia DR3 1").to_csv(p, index=False),
     "column 'source_id' is not an integer identifier"),
    ("bp_only.csv", lambda p: pd.DataFrame({
        "source_id": [1, 1], "transit_id": [5, 6], "band": "BP", "time": [1.0, 2.0],
        "mag": 15.0, "flux": 1e4, "flux_error": 10.0, "rejected_by_photometry": False,
        "rejected_by_variability": False}).to_csv(p, index=False), "no G-band epoch rows"),
    ("binary.csv", lambda p: p.write_bytes(bytes(range(256)) * 8), "not a readable CSV"),
])
def test_other_unreadable_epoch_files_are_errors_naming_them(tmp_path, name, write, names):
    path = tmp_path / name
    write(path)
    with pytest.raises(layouts.LayoutError) as err:
        layouts.read_epoch_photometry(path)
    assert str(err.value).startswith(f"{path}:") and names in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_good_files_read_as_before():
    """The errors above change nothing for readable files: the RAW fixture's 10 G epochs."""
    epochs = layouts.read_epoch_photometry(GAIA_RAW)
    assert len(epochs) == 10 and epochs["source_id"].nunique() == 3
    assert np.isfinite(epochs.loc[~epochs["rejected"], "mag"]).all()
    sink: list[pd.DataFrame] = []
    with pytest.warns(LabelWarning, match=r"source_id \[118\]"):  # its one null [Fe/H]
        labels = read_labels(LABELS, set_aside=sink)
    assert len(labels) == len(pd.read_csv(LABELS)) - 1 and sink[0]["source_id"].tolist() == [118]
