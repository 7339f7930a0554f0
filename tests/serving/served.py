"""The real `mlflow models serve` of models:/rrl-feh@champion, and request bodies for it."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from rrlfeh.serving.pipeline import OUTPUT_COLUMNS

from conftest import BIN, REPO, project_env

REQUESTS = REPO / "tests" / "data" / "requests"
MODEL_URI = "models:/rrl-feh@champion"
START_TIMEOUT_S = 90.0


def free_port() -> int:
    """A port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(project: Path) -> dict[str, str]:
    """What the server needs: the venv's bin first on PATH and the project's own store."""
    return project_env(MLFLOW_TRACKING_URI=f"sqlite:///{project.resolve() / 'mlflow.db'}")


@dataclass
class Server:
    """A running scoring server: its URL, process and log."""

    url: str
    proc: subprocess.Popen
    log: Path

    def post(self, body: bytes | str, content_type: str = "application/json",
             timeout: float = 120.0) -> requests.Response:
        data = body.encode() if isinstance(body, str) else body
        return requests.post(f"{self.url}/invocations", data=data, timeout=timeout,
                             headers={"Content-Type": content_type})

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The served output of a frame (asserting a 200)."""
        resp = self.post(split_body(frame))
        assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:500]}"
        return predictions(resp)

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def start_server(project: Path, log: Path, port: int | None = None, workers: int = 1) -> Server:
    """`mlflow models serve` (`workers` uvicorn worker processes) in its own session, once
    /ping answers (AssertionError with the server's log when it exits or is not up within
    START_TIMEOUT_S)."""
    port = port or free_port()
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=project, env=server_env(project), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    t0 = time.monotonic()
    while time.monotonic() - t0 < START_TIMEOUT_S:
        if proc.poll() is not None:
            raise AssertionError(f"`{' '.join(cmd)}` exited with {proc.returncode} before "
                                 f"answering /ping; its log:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/ping", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise AssertionError(f"`{' '.join(cmd)}` did not answer /ping within {START_TIMEOUT_S:.0f} s;"
                         f" its log:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    """SIGTERM to the server's process group (mlflow -> uvicorn -> worker), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _jsonable(v):
    """A cell as JSON: NaN/None/NA null, numpy scalars as Python ones."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def split_table(frame: pd.DataFrame) -> dict:
    """`dataframe_split` of a frame (NaN as null, standard JSON)."""
    return {"columns": [str(c) for c in frame.columns],
            "data": [[_jsonable(v) for v in row] for row in frame.itertuples(index=False)]}


def split_body(frame: pd.DataFrame) -> str:
    return json.dumps({"dataframe_split": split_table(frame)}, allow_nan=False)


def records_body(frame: pd.DataFrame) -> str:
    t = split_table(frame)
    return json.dumps({"dataframe_records": [dict(zip(t["columns"], r, strict=True))
                                             for r in t["data"]]}, allow_nan=False)


def frame_of(body: str | dict) -> pd.DataFrame:
    """The frame of a `dataframe_split` body (as a file of tests/data/requests holds it)."""
    d = json.loads(body) if isinstance(body, str) else body
    t = d["dataframe_split"]
    return pd.DataFrame(t["data"], columns=t["columns"])


def strict_json(text: str):
    """`text` parsed as JSON proper: the tokens NaN and ±Infinity, which Python writes and
    `JSON.parse` refuses, are an error."""
    def refuse(token: str):
        raise ValueError(f"not JSON: the token {token} in the answer")
    return json.loads(text, parse_constant=refuse)


def predictions(resp: requests.Response) -> pd.DataFrame:
    """The served output table (one row a star), read with a strict JSON parser; a JSON null in
    a float column (a star not scored) reads as NaN, as a client's typed reader does."""
    out = pd.DataFrame(strict_json(resp.text)["predictions"])
    floats = [c for c, d in OUTPUT_COLUMNS.items() if d == "float64" and c in out]
    return out.astype({c: "float64" for c in floats})


def one_line_error(resp: requests.Response, max_len: int = 400) -> str:
    """The message of a rejected request, asserting what every rejection must be: a 4xx with a
    JSON body whose message is one short line."""
    assert 400 <= resp.status_code < 500, f"{resp.status_code}: {resp.text[:500]}"
    try:
        message = resp.json()["message"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"no JSON message in the {resp.status_code}: {resp.text[:500]}"
                             ) from exc
    assert "\n" not in message and "\r" not in message, f"not one line: {message[:600]!r}"
    assert 0 < len(message) <= max_len, f"{len(message)} characters: {message[:600]!r}"
    assert "Failed to predict" not in message, message
    return message


def raw_request(project: Path, ids: list[int], star_values: bool = True) -> pd.DataFrame:
    """The long form of stars of the project's data/raw, in the order of `ids`: every epoch (as
    the score stage sends them, with `rejected`), with the catalogue's period, epoch of maximum
    and type when `star_values`, without them (derived by the server) otherwise."""
    import pyarrow.parquet as pq

    from rrlfeh.serving.inputs import request_frame
    from rrlfeh.stages.score import STAR_FIELDS

    raw = project / "data" / "raw"
    stars = pd.read_parquet(raw / "stars.parquet", columns=list(STAR_FIELDS))
    epochs = pq.read_table(raw / "epochs.parquet", filters=[("source_id", "in", ids)]).to_pandas()
    frame = request_frame(epochs, stars)
    order = {s: i for i, s in enumerate(ids)}
    frame = frame.iloc[np.argsort(frame["source_id"].map(order).to_numpy(), kind="stable")]
    if not star_values:
        frame = frame.drop(columns=["period", "epoch_max", "type"])
    return frame.reset_index(drop=True)
