"""The pyfunc's own rejections, in process: RequestRejected keeps its one line, and the scoring
server's body decoder, as `RRLFehModel.load_context` wraps it inside the server only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.pyfunc import scoring_server
from served import REQUESTS, frame_of

from rrlfeh.serving import pyfunc
from rrlfeh.serving.pyfunc import RequestRejected

from conftest import load_champion, tracking


def test_request_rejected_keeps_its_first_message():
    exc = RequestRejected("missing column(s) mag")
    exc.message = "Failed to predict data '<the whole frame>'. \nError: missing column(s) mag"
    assert exc.message == "missing column(s) mag"
    assert json.loads(exc.serialize_as_json())["message"] == "missing column(s) mag"
    assert exc.get_http_status_code() == 400


@pytest.fixture
def wrapped(monkeypatch):
    """scoring_server._decode_json_input as the server's worker has it (restored after)."""
    monkeypatch.setattr(scoring_server, "_decode_json_input", scoring_server._decode_json_input)
    pyfunc._one_line_body_errors()
    pyfunc._one_line_body_errors()  # idempotent: wrapped once
    decode = scoring_server._decode_json_input
    assert decode._rrlfeh_one_line and not hasattr(decode.__wrapped__, "_rrlfeh_one_line")
    return decode


@pytest.mark.parametrize(("body", "names"), [
    (b"", "empty request body"),
    (b"  \n", "empty request body"),
    ((REQUESTS / "not_json.txt").read_bytes(), "not JSON (Expecting value at line 1 column 1)"),
    (b'{"dataframe_split": "\xff\xfe"}', "not UTF-8"),
    (b'{"columns": ["source_id"], "data": [[1]]}', "got keys ['columns', 'data']"),
    (b"{}", "got an empty object"),
    (b'{"dataframe_split": {}, "dataframe_records": []}', "exactly one table key"),
    (b'{"dataframe_split": {"data": []}, "params": {"derive_n_jobs": 1.5}}',
     "derive_n_jobs must be an integer, got float"),
    (b'{"dataframe_split": {"data": []}, "params": [1]}', "'params' must be an object"),
])
def test_an_unreadable_body_is_one_line(wrapped, body: bytes, names: str):
    with pytest.raises(RequestRejected) as info:
        wrapped(body)
    message = info.value.message
    assert names in message and "\n" not in message and len(message) < 300, message
    assert "1680.2594305945222" not in message  # a time of not_json.txt


def test_a_readable_body_passes_unchanged(wrapped):
    body = (REQUESTS / "three_epochs.json").read_bytes()
    assert wrapped(body) == json.loads(body)
    assert wrapped({"dataframe_split": {"data": []}}) == {"dataframe_split": {"data": []}}
    ok = b'{"dataframe_records": [], "params": {"derive_n_jobs": 2}}'
    assert wrapped(ok) == json.loads(ok)


@pytest.mark.slow
def test_the_loaded_model_rejects_a_frame_without_source_id_in_one_line(pipeline_project: Path):
    model = load_champion(pipeline_project)
    # outside the scoring server nothing of MLflow is wrapped
    assert not hasattr(scoring_server._decode_json_input, "_rrlfeh_one_line")
    frame = frame_of((REQUESTS / "missing_source_id.json").read_text())
    with pytest.raises(RequestRejected) as info:
        model.predict(frame)
    message = info.value.message
    assert message.startswith("missing column(s) source_id;") and "\n" not in message
    # and a good frame of the same star is scored (a star of 3 epochs gets its status)
    out = model.predict(frame_of((REQUESTS / "three_epochs.json").read_text()))
    assert isinstance(out, pd.DataFrame) and out["status"].str.contains("too few").all()


def test_the_registered_model_pins_what_scoring_imports(pipeline_project: Path):
    """The champion's requirements.txt pins TensorFlow, Keras and the scientific stack at the
    versions installed here (read from the installed distributions, not from the project's
    list), so an environment MLflow builds from it can load the members."""
    from importlib.metadata import distributions

    from mlflow.artifacts import download_artifacts

    with tracking(f"sqlite:///{pipeline_project / 'mlflow.db'}"):
        folder = Path(download_artifacts(artifact_uri="models:/rrl-feh@champion"))
    pinned = dict(line.split("==") for line in
                  (folder / "requirements.txt").read_text().split() if "==" in line)
    installed = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in distributions()}
    tf = "tensorflow-cpu" if "tensorflow-cpu" in installed else "tensorflow"
    for name in (tf, "keras", "numpy", "pandas", "scipy", "scikit-learn", "mlflow"):
        assert pinned.get(name) == installed[name], (name, pinned)
