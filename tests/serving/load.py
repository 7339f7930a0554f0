"""Many concurrent clients against a running scoring server, bounded in requests and in time.

Each client sends its own deterministic mix of good requests (stars of the project's data/raw,
different stars per client and request, so a lost or mixed-up answer shows) and malformed ones
(the bodies of tests/data/requests and a few more); every answer is checked against its own
request: a good one must hold exactly the stars asked, in order, with the catalogue's status and
numbers (the score stage's, through the same pyfunc in-process: an independent reference); a
malformed one must be its expected 4xx with a one-line message. Latency and status are recorded
per request, the resident memory of the server and all its children during the run.
Used by tests/serving/test_server_load.py and benchmarks/serve_load.py.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import requests
from served import REQUESTS, raw_request, split_body

ATOL = 1e-6  # dex: served numbers against the catalogue (as tests/serving/test_server.py)
NUMBERS = ("feh", "feh_std", "feh_spread")
MAX_MESSAGE = 400  # characters of a rejection's one line
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    """One request and what its answer must be: a 200 with the stars `ids` in this order, or
    the error `status` whose one-line message contains `says`."""

    label: str
    body: bytes
    content_type: str = JSON
    ids: tuple[int, ...] = ()
    status: int = 200
    says: str = ""


@dataclass
class Answer:
    """What one request got: its HTTP status (None: no answer, `text` says why), the seconds
    from sending to the last byte read and when it ended (seconds since the run started)."""

    client: int
    case: Case
    status: int | None
    seconds: float
    ended: float
    text: str


@dataclass
class LoadRun:
    """The answers of a run, its wall time, whether the time limit ended it before the request
    count, how many requests were sent (as many as answers unless some were lost) and the
    server's resident memory over the run as (seconds, bytes)."""

    answers: list[Answer]
    wall_s: float
    cut_short: bool
    sent: int
    rss: list[tuple[float, int]] = field(default_factory=list)

    def status_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(str(a.status) for a in self.answers).items()))

    def latencies_ms(self) -> np.ndarray:
        return np.array([a.seconds * 1000 for a in self.answers if a.status is not None])

    def stars_answered(self) -> int:
        return sum(len(a.case.ids) for a in self.answers if a.status == 200)


# ---- the requests ---------------------------------------------------------------------------

# the malformed bodies of tests/data/requests and a piece of their one-line message
MALFORMED_FILES = {
    "missing_mag.json": "missing column(s) mag",
    "missing_source_id.json": "missing column(s) source_id",
    "not_json.txt": "not JSON",
    "empty.txt": "empty request body",
    "no_dataframe_key.json": "table key",
}


def malformed_cases(good_body: bytes) -> list[Case]:
    """The files of MALFORMED_FILES, and, built from a good body: cut in half, sent as
    text/plain (MLflow's own 415, a plain-text line), with a source_id beyond int64, as a JSON
    list, with params of the wrong type."""
    cases = [Case(name, (REQUESTS / name).read_bytes(), status=400, says=says)
             for name, says in MALFORMED_FILES.items()]
    body = json.loads(good_body)
    huge = json.loads(good_body)
    table = huge["dataframe_split"]
    table["data"][0][table["columns"].index("source_id")] = 2**70
    bad_params = {**body, "params": {"derive_n_jobs": "many"}}
    cases += [
        Case("truncated", good_body[: len(good_body) // 2], status=400, says="not JSON"),
        Case("text/plain", good_body, content_type="text/plain", status=415,
             says="content types"),
        Case("huge source_id", json.dumps(huge).encode(), status=400, says="source_id"),
        Case("JSON list", b"[1, 2, 3]", status=400, says="JSON dictionary"),
        Case("bad params", json.dumps(bad_params).encode(), status=400, says="derive_n_jobs"),
    ]
    return cases


def client_plans(project: Path, ids: list[int], n_clients: int, per_client: int,
                 malformed_every: int = 3) -> list[list[Case]]:
    """`per_client` requests for each of `n_clients` clients: every `malformed_every`-th one
    (shifted by the client's number) malformed, the others good, of 1, 2 or 3 stars taken in
    turn from `ids` (so that clients and requests ask for different stars while `ids` last)."""
    slots = [(c, r, (c + r) % malformed_every == malformed_every - 1)
             for c in range(n_clients) for r in range(per_client)]
    sizes, wanted, at = {}, [], 0
    for c, r, bad in slots:
        if not bad:
            n = 1 + len(sizes) % 3
            sizes[c, r] = [ids[(at + j) % len(ids)] for j in range(n)]
            wanted += sizes[c, r]
            at += n
    frame = raw_request(project, sorted(set(wanted)))
    by_star = {int(s): g for s, g in frame.groupby("source_id", sort=False)}
    good = {key: Case(f"stars {','.join(map(str, star_ids))}",
                      split_body(pd.concat([by_star[s] for s in star_ids])).encode(),
                      ids=tuple(star_ids))
            for key, star_ids in sizes.items()}
    bad_cases = malformed_cases(next(iter(good.values())).body)
    plans: list[list[Case]] = [[] for _ in range(n_clients)]
    for k, (c, r, bad) in enumerate(slots):
        plans[c].append(bad_cases[k % len(bad_cases)] if bad else good[c, r])
    return plans


# ---- the checks -----------------------------------------------------------------------------

_PAYLOAD_NUMBER = re.compile(rb"\d+\.\d{6,}|\d{12,}")


def _close(a: object, b: object) -> bool:
    a, b = float("nan") if a is None else float(a), float("nan") if b is None else float(b)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= ATOL


def problem(answer: Answer, reference: pd.DataFrame) -> str | None:
    """What is wrong with an answer (None when it is right): a good request must get exactly
    its stars, in order, with the status and numbers of `reference` (indexed by source_id);
    a malformed one its status and a short one-line message naming `case.says` without
    echoing the request's long numbers."""
    case = answer.case
    where = f"client {answer.client}, {case.label}"
    if answer.status is None:
        return f"{where}: no answer ({answer.text})"
    if answer.status != case.status:
        return f"{where}: {answer.status} instead of {case.status}: {answer.text[:300]}"
    if case.status == 200:
        try:
            rows = json.loads(answer.text)["predictions"]
        except (ValueError, KeyError, TypeError):
            return f"{where}: no predictions in the 200: {answer.text[:300]}"
        got = tuple(int(r["source_id"]) for r in rows)
        if got != case.ids:
            return f"{where}: answered stars {got}"
        for r in rows:
            want = reference.loc[int(r["source_id"])]
            if r["status"] != want["status"]:
                return f"{where}: star {r['source_id']} status {r['status']!r} not " \
                       f"{want['status']!r}"
            bad = [c for c in NUMBERS if not _close(r[c], want[c])]
            if bad:
                return f"{where}: star {r['source_id']} {bad[0]} {r[bad[0]]} not {want[bad[0]]}"
        return None
    try:
        message = json.loads(answer.text)["message"]
    except (ValueError, KeyError, TypeError):
        message = answer.text  # MLflow's own 415 is a line of plain text
    if "\n" in message.strip() or "\r" in message or not 0 < len(message) <= MAX_MESSAGE:
        return f"{where}: not one short line: {message[:600]!r}"
    if case.says not in message:
        return f"{where}: {case.says!r} not in {message!r}"
    echoed = [n.decode() for n in _PAYLOAD_NUMBER.findall(case.body) if n.decode() in message]
    return f"{where}: the message echoes the request ({echoed[:2]})" if echoed else None


def problems(run: LoadRun, reference: pd.DataFrame) -> list[str]:
    return [p for a in run.answers if (p := problem(a, reference))]


# ---- memory and the run ---------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its children (mlflow -> uvicorn -> workers)."""
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class RssSampler:
    """A thread sampling `tree_rss(pid)` every `every_s` seconds while in a `with` block."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            try:
                self.samples.append((time.monotonic() - t0, tree_rss(self.pid)))
            except psutil.NoSuchProcess:
                return
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_load(url: str, plans: list[list[Case]], max_requests: int, max_seconds: float,
             server_pid: int | None = None, timeout_s: float = 120.0) -> LoadRun:
    """One thread per plan (a client with its own requests.Session, all starting together),
    each sending its plan's requests in turn, over again, to `url`/invocations until
    `max_requests` have been sent in all or `max_seconds` have passed (a request in flight
    then finishes, within `timeout_s`). Samples the server's memory when `server_pid` is given.
    """
    lock = threading.Lock()
    sent = [0]
    answers: list[Answer] = []
    start = threading.Barrier(len(plans))
    target = f"{url}/invocations"

    def client(c: int, plan: list[Case]) -> None:
        with requests.Session() as session:
            start.wait()
            for r in range(max_requests):
                with lock:
                    if sent[0] >= max_requests or time.monotonic() >= deadline:
                        return
                    sent[0] += 1
                case = plan[r % len(plan)]
                t1 = time.monotonic()
                try:
                    resp = session.post(target, data=case.body, timeout=timeout_s,
                                        headers={"Content-Type": case.content_type})
                    status, text = resp.status_code, resp.text
                except requests.RequestException as exc:
                    status, text = None, f"{type(exc).__name__}: {str(exc)[:200]}"
                t2 = time.monotonic()
                with lock:
                    answers.append(Answer(c, case, status, t2 - t1, t2 - t0, text))

    threads = [threading.Thread(target=client, args=(c, p), daemon=True)
               for c, p in enumerate(plans)]
    sampler = RssSampler(server_pid) if server_pid else None
    if sampler:
        sampler.__enter__()
    try:
        t0 = time.monotonic()
        deadline = t0 + max_seconds
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + timeout_s + 5)
        wall = time.monotonic() - t0
    finally:
        if sampler:
            sampler.__exit__()
    with lock:
        done = sorted(answers, key=lambda a: a.ended)
        return LoadRun(done, wall, sent[0] < max_requests, sent[0],
                       sampler.samples if sampler else [])
