"""The registered model behind the real `mlflow models serve` (models:/rrl-feh@champion of the
session's tiny `dvc repro`): good requests get the catalogue's numbers, malformed ones a one-line
4xx, per-star problems a 200 with each star's status; the server keeps answering.

The static bodies are in tests/data/requests (README.md there); the others are built here from
the project's data/raw. Tests run in file order: the last one checks the server after the rest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from served import (
    REQUESTS,
    Server,
    frame_of,
    one_line_error,
    predictions,
    raw_request,
    records_body,
    split_body,
    start_server,
    stop_server,
    strict_json,
)

from conftest import REPO, load_champion, project_env

pytestmark = pytest.mark.slow

ATOL = 1e-6
NUMBERS = ["feh", "feh_std", "feh_spread"]


@pytest.fixture(scope="module")
def project(pipeline_project: Path) -> Path:
    """The session's tiny `dvc repro` project (tests/conftest.py); read-only here."""
    return pipeline_project


@pytest.fixture(scope="module")
def server(project: Path, tmp_path_factory) -> Server:
    """`mlflow models serve -m models:/rrl-feh@champion` on a free port, once for the module."""
    srv = start_server(project, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def catalogue(project: Path) -> pd.DataFrame:
    """What the score stage wrote for every star of data/raw (through the same pyfunc)."""
    return pd.read_parquet(project / "data" / "scored" / "catalogue.parquet").set_index(
        "source_id")


@pytest.fixture(scope="module")
def good_ids(catalogue: pd.DataFrame) -> list[int]:
    """Two RRab and one RRc of data/raw that the catalogue scored."""
    ok = catalogue[catalogue["status"] == "ok"]
    ids = ok.index[ok["type"] == "RRab"][:2].tolist() + ok.index[ok["type"] == "RRc"][:1].tolist()
    assert len(ids) == 3, ok["type"].value_counts()
    return [int(i) for i in ids]


@pytest.fixture(scope="module")
def local_model(project: Path):
    """The same registered model loaded in this process."""
    return load_champion(project)


def static(name: str) -> bytes:
    return (REQUESTS / name).read_bytes()


def texts(values: pd.Series) -> list:
    """A text column with null (None, NaN, NA) as None."""
    return [None if pd.isna(v) else str(v) for v in values]


def assert_same_scores(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same stars in the same order with the same status, type, period and numbers."""
    got, want = got.reset_index(drop=True), want.reset_index(drop=True)
    assert got["source_id"].tolist() == want["source_id"].tolist()
    assert got["status"].tolist() == want["status"].tolist()
    assert texts(got["type"]) == texts(want["type"])
    assert got["n_epochs"].tolist() == want["n_epochs"].tolist()
    np.testing.assert_allclose(got["period"].astype(float), want["period"].astype(float),
                               rtol=1e-12)
    for c in NUMBERS:
        np.testing.assert_allclose(got[c].astype(float), want[c].astype(float), atol=ATOL,
                                   rtol=0, err_msg=c)


def from_catalogue(catalogue: pd.DataFrame, ids: list[int]) -> pd.DataFrame:
    return catalogue.loc[ids].reset_index()


def payload_numbers(body: bytes) -> set[str]:
    """Long numbers of a body (times, magnitudes, ids): none may come back in a message."""
    return {m.decode() for m in re.findall(rb"\d+\.\d{6,}|\d{12,}", body)}


def assert_not_echoed(message: str, body: bytes) -> None:
    echoed = [n for n in payload_numbers(body) if n in message]
    assert not echoed, f"the message echoes the request ({echoed[:3]}): {message}"


# ---- good requests --------------------------------------------------------------------------


def test_the_server_answers_ping(server: Server):
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200


def test_stars_with_their_catalogue_values_get_the_catalogue_numbers(server, project,
                                                                    catalogue, good_ids):
    out = server.score(raw_request(project, good_ids))
    assert list(out.columns)[:2] == ["source_id", "type"] and len(out) == len(good_ids)
    assert_same_scores(out, from_catalogue(catalogue, good_ids))
    assert not out["period_derived"].any()
    assert out["in_domain"].tolist() == catalogue.loc[good_ids, "in_domain"].tolist()


def test_records_form_gives_the_same_as_split(server, project, good_ids):
    frame = raw_request(project, good_ids)
    resp = server.post(records_body(frame))
    assert resp.status_code == 200, resp.text[:500]
    assert_same_scores(predictions(resp), server.score(frame))


def test_column_names_in_any_case_give_the_same_answer(server, project, catalogue, good_ids):
    frame = raw_request(project, good_ids)
    shouted = frame.rename(columns={c: f" {c.upper()}" for c in frame.columns})
    for body in (split_body(shouted), records_body(shouted)):
        resp = server.post(body)
        assert resp.status_code == 200, resp.text[:500]
        assert_same_scores(predictions(resp), from_catalogue(catalogue, good_ids))


def test_stars_without_period_epoch_or_type_are_derived_as_in_process(server, project,
                                                                      catalogue, good_ids,
                                                                      local_model):
    frame = raw_request(project, good_ids, star_values=False)
    assert not {"period", "epoch_max", "type"} & set(frame.columns)
    out = server.score(frame)
    assert_same_scores(out, local_model.predict(frame))
    assert out["period_derived"].all() and (out["status"] == "ok").all()
    # the period search finds the catalogue's period and type of these clean stars
    np.testing.assert_allclose(out["period"], catalogue.loc[good_ids, "period"], rtol=1e-3)
    assert out["type"].tolist() == catalogue.loc[good_ids, "type"].tolist()


def test_output_rows_follow_the_first_appearance_of_each_star(server, project, catalogue,
                                                              good_ids):
    shuffled = raw_request(project, good_ids).sample(frac=1.0, random_state=5)
    first = [int(s) for s in pd.unique(shuffled["source_id"])]
    assert sorted(first) == sorted(good_ids)
    assert_same_scores(server.score(shuffled), from_catalogue(catalogue, first))


# ---- malformed requests: a 4xx with one short line ------------------------------------------


@pytest.mark.parametrize(("name", "names"), [
    ("missing_mag.json", "missing column(s) mag"),
    ("missing_source_id.json", "missing column(s) source_id"),
    ("not_json.txt", "not JSON"),
    ("empty.txt", "empty request body"),
    ("no_dataframe_key.json", "table key"),
])
def test_a_malformed_request_gets_a_one_line_4xx(server: Server, name: str, names: str):
    body = static(name)
    resp = server.post(body)
    message = one_line_error(resp)
    assert names in message, message
    assert_not_echoed(message, body)


def test_a_body_that_is_not_utf8_gets_a_one_line_4xx(server: Server):
    message = one_line_error(server.post(b'{"dataframe_split": "\xff\xfe\xfa"}'))
    assert "UTF-8" in message or "not JSON" in message, message


def test_bad_params_get_a_one_line_4xx_without_the_frame(server: Server):
    body = json.loads(static("three_epochs.json"))
    body["params"] = {"derive_n_jobs": "many"}
    raw = json.dumps(body).encode()
    message = one_line_error(server.post(raw))
    assert "derive_n_jobs" in message, message
    assert_not_echoed(message, raw)


def test_null_source_id_gets_a_one_line_4xx(server: Server):
    frame = frame_of(static("three_epochs.json").decode())
    frame["source_id"] = frame["source_id"].astype(object)
    frame.loc[1, "source_id"] = None
    body = split_body(frame).encode()
    message = one_line_error(server.post(body))
    assert "source_id" in message, message
    assert_not_echoed(message, body)


def test_rows_mlflow_would_pad_or_ids_it_would_truncate_get_a_one_line_4xx(server: Server):
    body = json.loads(static("three_epochs.json"))
    short = json.loads(json.dumps(body))
    short["dataframe_split"]["data"][1] = short["dataframe_split"]["data"][1][:-1]
    message = one_line_error(server.post(json.dumps(short).encode()))
    assert "row 1 has" in message, message
    split = body["dataframe_split"]
    at = [c.lower() for c in split["columns"]].index("source_id")
    for row, sid in zip(split["data"], [1.5, 1.5, 1.7], strict=False):
        row[at] = sid  # MLflow's parser alone makes both stars 1
    records = [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
    for fractional in (body, {"dataframe_records": records}):
        message = one_line_error(server.post(json.dumps(fractional).encode()))
        assert "source_id is not an integer: 1.5" in message, message


# ---- per-star problems: a 200 with each star's status ---------------------------------------


def test_null_and_nan_times_leave_those_epochs_out(server: Server):
    body = static("null_times.json")
    frame = frame_of(body.decode())
    out = predictions(server.post(body))
    assert out["source_id"].tolist() == pd.unique(frame["source_id"]).tolist()
    partly, wholly = out.iloc[0], out.iloc[1]
    first = frame[frame["source_id"] == partly["source_id"]]
    usable = first["time"].notna() & first["mag"].notna() & ~first["rejected"]
    assert partly["status"] == "ok" and partly["n_epochs"] == usable.sum() < len(first)
    assert wholly["n_epochs"] == 0 and "unusable" in wholly["status"]
    assert np.isnan(wholly["feh"])
    # the non-standard JSON token NaN (which the server's json.loads reads) means the same
    nan_body = body.replace(b"null", b"NaN")
    assert_same_scores(predictions(server.post(nan_body)), out)


def test_a_star_with_three_epochs_gets_a_status(server: Server):
    resp = server.post(static("three_epochs.json"))
    out = predictions(resp)  # strict JSON: what the stars lack is null, never NaN
    assert '"period": null' in resp.text and "NaN" not in resp.text
    assert len(out) == 2 and (out["n_epochs"] == 3).all()
    assert out["status"].str.contains("too few").all(), out["status"].tolist()
    assert out["feh"].isna().all() and not out["in_domain"].any()


def test_text_in_one_stars_mag_is_its_status_and_the_others_are_scored(server, project,
                                                                      catalogue, good_ids):
    text = frame_of(static("text_mag.json").decode())
    good = raw_request(project, good_ids[:2])
    out = predictions(server.post(split_body(pd.concat([good, text], ignore_index=True))))
    assert out["source_id"].tolist() == [*good_ids[:2], int(text["source_id"].iloc[0])]
    assert out["status"].iloc[2] == "mag is not a number in 1 row(s) (e.g. 'bright')"
    assert np.isnan(out["feh"].iloc[2])
    assert_same_scores(out.iloc[:2], from_catalogue(catalogue, good_ids[:2]))


def test_an_unknown_type_gets_a_status(server: Server):
    out = predictions(server.post(static("unknown_type.json")))
    assert len(out) == 1
    assert out["status"].item() == "unknown type 'RRd' (this model scores RRab and RRc)"
    assert np.isnan(out["feh"].item()) and out["domain_reason"].item() == "not scored"


def resampled(frame: pd.DataFrame, n: int, seed: int = 1, jitter_d: float = 2e-4) -> pd.DataFrame:
    """`n` epochs of one star drawn from its clean epochs: each moved by a whole number of
    periods (same phase), with 0.01 mag of noise and `jitter_d` days of time jitter."""
    rng = np.random.default_rng(seed)
    e = frame[~frame["rejected"]].reset_index(drop=True)
    big = e.iloc[rng.integers(0, len(e), n)].reset_index(drop=True)
    big["time"] += rng.integers(-300, 300, n) * big["period"] + jitter_d * rng.normal(size=n)
    big["mag"] = big["mag"] + rng.normal(0.0, 0.01, n)
    return big[["source_id", "time", "mag", "period", "epoch_max", "type"]]


def test_ten_thousand_epochs_of_one_star(server, project, catalogue, good_ids):
    star = good_ids[0]
    big = resampled(raw_request(project, [star]), 10_000)
    t0 = time.monotonic()
    given = server.score(big)
    derived = server.score(big.drop(columns=["period", "epoch_max", "type"]))
    assert time.monotonic() - t0 < 50, "10,000 epochs took most of the server's 60 s timeout"
    for out in (given, derived):
        assert out["source_id"].tolist() == [star] and out["status"].item() == "ok"
        assert out["n_epochs"].item() == 10_000
        # a finite [Fe/H] with its error. Not "about the catalogue's": 10,000 noisy copies of
        # the star's ~50 epochs make the spline follow them closely (2x the degrees of freedom),
        # which moves the smooth curve's phi31 and amplitude that the model reads (README)
        assert np.isfinite(out["feh"].item()) and out["feh_std"].item() > 0
    assert derived["period_derived"].item()
    assert derived["period"].item() == pytest.approx(catalogue.loc[star, "period"], rel=1e-4)


def test_repeated_times_get_a_status(server, project, good_ids):
    twice = resampled(raw_request(project, [good_ids[0]]), 2_000, jitter_d=0.0)
    out = server.score(twice)
    assert out["status"].item().startswith("duplicated times"), out["status"].item()


def test_a_mixed_request_scores_the_good_stars_as_alone(server, project, catalogue, good_ids):
    """Good stars of data/raw between the bad ones (renumbered 11-14 so that none shares an id):
    one row a star in input order, the good ones with the numbers they get alone, the bad ones
    with the status they get alone."""
    rrd = frame_of(static("unknown_type.json").decode()).assign(source_id=11)
    three = frame_of(static("three_epochs.json").decode())
    three["source_id"] = three["source_id"].map(dict(zip(pd.unique(three["source_id"]),
                                                         [12, 13], strict=True)))
    nulls = frame_of(static("null_times.json").decode())
    no_time = nulls[nulls["source_id"] == nulls["source_id"].iloc[-1]].assign(source_id=14)
    good = raw_request(project, good_ids)
    parts = [rrd, good[good["source_id"] == good_ids[0]], three[three["source_id"] == 12],
             good[good["source_id"] == good_ids[1]], no_time,
             good[good["source_id"] == good_ids[2]], three[three["source_id"] == 13]]
    order = [11, good_ids[0], 12, good_ids[1], 14, good_ids[2], 13]
    assert not set(good_ids) & {11, 12, 13, 14}
    mixed = pd.concat(parts, ignore_index=True)
    out = server.score(mixed)
    assert out["source_id"].tolist() == order
    by_id = out.set_index("source_id")
    assert_same_scores(by_id.loc[good_ids].reset_index(), from_catalogue(catalogue, good_ids))
    alone = pd.concat([server.score(rrd), server.score(three), server.score(no_time)],
                      ignore_index=True).set_index("source_id")
    bad = [11, 12, 13, 14]
    assert_same_scores(by_id.loc[bad].reset_index(), alone.loc[bad].reset_index())
    assert (by_id.loc[bad, "status"] != "ok").all()
    assert (by_id.loc[good_ids, "status"] == "ok").all()


# ---- and then --------------------------------------------------------------------------------


def docs_serving_example() -> tuple[str, str, dict]:
    """docs/using.md's serving example: the Python that writes the request, the curl command and
    the answer shown after them."""
    text = (REPO / "docs" / "using.md").read_text()
    m = re.search(r"```bash\n\.venv/bin/python - <<'PY'[^\n]*\n(.*?)\nPY\n(curl [^\n]+)\n```\n"
                  r"```json\n(.*?)```", text, re.S)
    assert m, "docs/using.md: the serving example (python heredoc, curl, json) is not there"
    return m.group(1), m.group(2), strict_json(m.group(3))


def test_the_docs_serving_example_runs_and_answers_as_shown(server, shared_data, tmp_path):
    """The docs' example, run as written (its request file and port moved to this test's):
    a strict-JSON answer with the columns shown and the model-independent values shown (the
    derived period, type, epochs, status); [Fe/H] depends on the champion, so only its kind."""
    code, curl, shown = docs_serving_example()
    body = tmp_path / "star.json"
    code = code.replace("/tmp/star.json", str(body)).replace("../shared/data", str(shared_data))
    subprocess.run([sys.executable, "-"], input=code, text=True, cwd=REPO, check=True,
                   env=project_env())
    port = server.url.rsplit(":", 1)[1]
    curl = curl.replace("/tmp/star.json", str(body)).replace("127.0.0.1:5001", f"127.0.0.1:{port}")
    out = subprocess.run(curl, shell=True, capture_output=True, text=True, cwd=REPO, check=True)
    got = strict_json(out.stdout)["predictions"]
    want = shown["predictions"]
    assert [list(r) for r in got] == [list(r) for r in want]
    for g, w in zip(got, want, strict=True):
        for key in ("source_id", "type", "period_derived", "n_epochs", "status", "in_domain",
                    "domain_reason"):
            assert g[key] == w[key], key
        assert g["period"] == pytest.approx(w["period"], rel=1e-6)  # the polish's tolerance
        assert all(isinstance(g[c], float) and np.isfinite(g[c]) for c in NUMBERS)


def test_the_server_still_answers_a_good_request_after_the_bad_ones(server, project, catalogue,
                                                                   good_ids):
    assert server.proc.poll() is None, server.log_tail()
    assert_same_scores(server.score(raw_request(project, good_ids[:1])),
                       from_catalogue(catalogue, good_ids[:1]))
    assert "Traceback" not in server.log_tail(200_000), server.log_tail()
