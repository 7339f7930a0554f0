"""A fake of the Gaia archive on 127.0.0.1: TAP async jobs and DataLink, with injected faults.

It answers what astroquery 0.4.11's `GaiaClass` asks (read from its source): POST
/tap-server/tap/async (303 to the job), GET .../async/<job>/phase, GET .../results/result (a
gzipped VOTable, the `votable_gzip` format), and POST /data-server/data (a zip of one INDIVIDUAL
EPOCH_PHOTOMETRY VOTable per star, named as the archive names them). The answers are made from a
deterministic synthetic sample (`make_archive`: rrlfeh.data.synthetic), written by astropy in the
archive's column layout; one star of the query answer has no epoch photometry, as happens in DR3.

Faults (`Rule`, spec `ENDPOINT[#N|@SOURCE_ID]=FAULT[:TIMES]`; endpoints async, phase, result,
data): 500, 503, reset (RST, no answer), slow (answers after `slow_s`, past the client's
timeout), truncate (a VOTable cut in half inside a valid zip/gzip), cut (the body cut off before
its Content-Length), short (a DataLink answer without one asked star), stall (no answer until
`release()`). Every request is logged (`log`, and with --log as JSON lines).

Standalone: python tests/gaia_archive_fake.py --port 0 --faults data#2=503 --log requests.jsonl
prints `serving http://127.0.0.1:<port>/` and serves until SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
from astropy.io import votable
from astropy.table import MaskedColumn, Table

from rrlfeh.data.synthetic import generate

FAULTS = ("500", "503", "reset", "slow", "truncate", "cut", "short", "stall")
ENDPOINTS = ("async", "phase", "result", "data")
SOLUTION_ID = 375316653866487564
ZIP_NAME = "EPOCH_PHOTOMETRY-Gaia DR3 {}.xml"  # the archive's file name inside the zip


# --------------------------------------------------------------------------- the data

@dataclass(frozen=True)
class Archive:
    """What the fake serves: `query_stars` in vari_rrlyrae, epochs of all but `no_photometry`."""

    query_stars: pd.DataFrame  # schema.STARS of every star the query answers
    epochs: pd.DataFrame       # schema.EPOCHS (G) of the stars with epoch photometry
    labels: pd.DataFrame       # schema.LABELS
    no_photometry: tuple[int, ...]
    star_files: dict[int, bytes] = field(default_factory=dict)  # source_id -> its VOTable

    @property
    def stars(self) -> pd.DataFrame:
        """The stars `acquire` must end with: those that have epoch photometry."""
        keep = ~self.query_stars["source_id"].isin(self.no_photometry)
        return self.query_stars.loc[keep].reset_index(drop=True)


def make_archive(n_stars: int = 24, seed: int = 7) -> Archive:
    """A deterministic sample of `n_stars` + 1 stars; the +1 has no epoch photometry."""
    s = generate(n_stars + 1, seed=seed)
    stars = s.stars.sort_values("source_id", ignore_index=True)
    lost = int(stars["source_id"].iloc[n_stars // 2])
    epochs = s.epochs.loc[s.epochs["source_id"] != lost].reset_index(drop=True)
    files = {int(sid): epoch_votable(g) for sid, g in epochs.groupby("source_id", sort=True)}
    return Archive(query_stars=stars, epochs=epochs, labels=s.labels, no_photometry=(lost,),
                   star_files=files)


def _votable_bytes(table: Table) -> bytes:
    """TABLEDATA VOTable as the archive writes it: text as char arraysize="*", flags boolean."""
    vt = votable.from_table(table)
    for f in vt.get_first_table().fields:
        if f.datatype in ("char", "unicodeChar"):
            f.datatype, f.arraysize = "char", "*"
        elif f.datatype == "bit":
            f.datatype = "boolean"
    buf = io.BytesIO()
    vt.to_xml(buf)
    return buf.getvalue()


def query_votable(stars: pd.DataFrame) -> bytes:
    """The vari_rrlyrae (+ ra, dec) answer to rrlfeh's ADQL for these stars."""
    rrab = (stars["type"] == "RRab").to_numpy()
    period = stars["period"].to_numpy()
    t = Table()
    t["source_id"] = stars["source_id"].to_numpy("int64")
    t["best_classification"] = stars["type"].astype(str).to_numpy().astype("S")
    t["pf"] = MaskedColumn(period, mask=~rrab)
    t["p1_o"] = MaskedColumn(period, mask=rrab)
    for ours, theirs in (("epoch_max", "epoch_g"), ("amplitude_g", "peak_to_peak_g"),
                         ("mean_mag_g", "int_average_g")):
        t[theirs] = stars[ours].to_numpy("float64")
    t["num_clean_epochs_g"] = stars["n_epochs_g"].to_numpy("int16")
    for col in ("phi31_g", "phi31_g_error", "r21_g", "ra", "dec"):
        t[col] = stars[col].to_numpy("float64")
    return _votable_bytes(t)


def epoch_votable(epochs: pd.DataFrame) -> bytes:
    """One star's EPOCH_PHOTOMETRY, INDIVIDUAL layout: G rows, then BP and RP (offset copies).

    Synthetic rejected epochs with values become rejected_by_variability, null ones have masked
    flux and NaN mag and are rejected_by_photometry, as in the archive's files.
    """
    frames = []
    for band, dt, dmag in (("G", 0.0, 0.0), ("BP", 2e-5, 0.31), ("RP", 4e-5, -0.52)):
        null = ~np.isfinite(epochs["flux"].to_numpy())
        frames.append(pd.DataFrame({
            "source_id": epochs["source_id"], "transit_id": epochs["transit_id"],
            "band": band, "time": epochs["time"] + dt, "mag": epochs["mag"] + dmag,
            "flux": epochs["flux"], "flux_error": epochs["flux_error"], "null": null,
            "rejected_by_photometry": null,
            "rejected_by_variability": epochs["rejected"].to_numpy() & ~null & (band == "G"),
        }))
    df = pd.concat(frames, ignore_index=True)
    t = Table()
    for col in ("source_id", "transit_id"):
        t[col] = df[col].to_numpy("int64")
    t["band"] = df["band"].to_numpy().astype("S")
    t["time"] = df["time"].to_numpy("float64")
    t["mag"] = df["mag"].to_numpy("float64")
    for col in ("flux", "flux_error"):
        t[col] = MaskedColumn(df[col].fillna(0.0).to_numpy("float64"), mask=df["null"])
    t["flux_over_error"] = MaskedColumn((df["flux"] / df["flux_error"]).fillna(0.0)
                                        .to_numpy("float32"), mask=df["null"])
    t["rejected_by_photometry"] = df["rejected_by_photometry"].to_numpy(bool)
    t["rejected_by_variability"] = df["rejected_by_variability"].to_numpy(bool)
    t["other_flags"] = np.where(df["null"], 4096, 0).astype("int64")
    t["solution_id"] = np.full(len(df), SOLUTION_ID, dtype="int64")
    return _votable_bytes(t)


# --------------------------------------------------------------------------- faults

@dataclass
class Rule:
    """Inject `fault` into requests to `endpoint`: the `nth` one (1-based), or every one asking
    for `star` (DataLink), or every one when both are None; at most `times` times (None: always)."""

    endpoint: str
    fault: str
    nth: int | None = None
    star: int | None = None
    times: int | None = None

    @classmethod
    def parse(cls, spec: str) -> Rule:
        """`data#2=503`, `data@4000000000000000001=stall`, `result#1=truncate`, `data=503:2`.

        short and @SOURCE_ID apply to data; truncate and cut not to async (a bodiless 303)."""
        m = re.fullmatch(r"(\w+)(?:#(\d+)|@(\d+))?=(\w+)(?::(\d+))?", spec.strip())
        if not m or m[1] not in ENDPOINTS or m[4] not in FAULTS:
            raise ValueError(f"fault spec {spec!r}: expected ENDPOINT[#N|@SOURCE_ID]=FAULT[:TIMES]"
                             f" with ENDPOINT in {ENDPOINTS} and FAULT in {FAULTS}")
        if (m[3] or m[4] == "short") and m[1] != "data":
            raise ValueError(f"fault spec {spec!r}: @SOURCE_ID and short apply to data only")
        if m[4] in ("truncate", "cut") and m[1] == "async":
            raise ValueError(f"fault spec {spec!r}: the async answer is a bodiless 303")
        return cls(m[1], m[4], nth=int(m[2]) if m[2] else None,
                   star=int(m[3]) if m[3] else None, times=int(m[5]) if m[5] else None)

    def matches(self, endpoint: str, nth: int, ids: tuple[int, ...]) -> bool:
        if endpoint != self.endpoint or self.times == 0:
            return False
        if self.nth is not None and self.nth != nth:
            return False
        return self.star is None or self.star in ids


@dataclass(frozen=True)
class Request:
    """One request the fake received: its number per endpoint, the ids asked, the fault used."""

    endpoint: str
    nth: int
    path: str
    ids: tuple[int, ...] = ()
    fault: str | None = None
    at: float = field(default_factory=time.time)


# --------------------------------------------------------------------------- the server

class FakeArchive:
    """The fake archive's HTTP server on 127.0.0.1 (port chosen by the OS unless given)."""

    def __init__(self, archive: Archive | None = None, faults: list[Rule | str] = (), *,
                 slow_s: float = 5.0, port: int = 0, log_file: str | None = None):
        self.archive = archive or make_archive()
        self.slow_s = slow_s
        self.log: list[Request] = []
        self._log_file = log_file
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self._released = threading.Event()
        self._stopped = threading.Event()
        self._jobs: dict[str, tuple[bytes, str]] = {}
        self.rules: list[Rule] = []
        self.set_faults(faults)
        self._star_files = self.archive.star_files
        self._query_stars = self.archive.query_stars
        self._answers: dict[int | None, bytes] = {}  # query answers by TOP n
        self.query_answer("SELECT gaiadr3.vari_rrlyrae")  # made before any request comes
        self.server = _Server(("127.0.0.1", port), _handler(self))
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-archive",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def start(self) -> FakeArchive:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeArchive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, faults: list[Rule | str]) -> None:
        """Replace the fault plan (and end any stall)."""
        with self._lock:
            self.rules = [r if isinstance(r, Rule) else Rule.parse(r) for r in faults]
        self.release()
        self._released.clear()

    def release(self) -> None:
        """Let stalled requests go on (they then answer normally)."""
        self._released.set()

    def requests(self, endpoint: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if r.endpoint == endpoint]

    def data_ids(self) -> list[list[int]]:
        """The ids each DataLink request asked for, in order."""
        return [list(r.ids) for r in self.requests("data")]

    def wait_for(self, endpoint: str, star: int, timeout_s: float = 60.0) -> Request:
        """Block until a request to `endpoint` asking for `star` has arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = [r for r in self.requests(endpoint) if star in r.ids]
            if hit:
                return hit[0]
            time.sleep(0.02)
        raise TimeoutError(f"no {endpoint} request for source_id {star} within {timeout_s} s")

    def _record(self, endpoint: str, path: str, ids: tuple[int, ...]) -> Request:
        with self._lock:
            self._counts[endpoint] += 1
            nth = self._counts[endpoint]
            fault = None
            for rule in self.rules:
                if rule.matches(endpoint, nth, ids):
                    fault = rule.fault
                    if rule.times is not None:
                        rule.times -= 1
                    break
            req = Request(endpoint, nth, path, ids, fault)
            self.log.append(req)
            if self._log_file:
                with open(self._log_file, "a") as f:
                    f.write(json.dumps({"endpoint": endpoint, "nth": nth, "path": path,
                                        "ids": list(ids), "fault": fault}) + "\n")
        return req

    # -- answers

    def query_answer(self, query: str) -> bytes:
        if "gaiadr3.vari_rrlyrae" not in query:
            raise LookupError(f"the fake answers rrlfeh's vari_rrlyrae query only, not {query!r}")
        top = re.search(r"SELECT\s+TOP\s+(\d+)", query, re.IGNORECASE)
        key = int(top[1]) if top else None
        if key not in self._answers:
            stars = self._query_stars if key is None else self._query_stars.head(key)
            self._answers[key] = query_votable(stars)
        return self._answers[key]

    def datalink_answer(self, ids: tuple[int, ...], *, drop: int | None = None,
                        cut_last: bool = False) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            found = [i for i in ids if i in self._star_files and i != drop]
            for k, sid in enumerate(found):
                body = self._star_files[sid]
                if cut_last and k == len(found) - 1:
                    body = body[:len(body) // 2]
                z.writestr(ZIP_NAME.format(sid), body)
        return buf.getvalue()


class _Server(ThreadingHTTPServer):
    """Threads per request (a stalled answer blocks no other); clients that hang up are normal."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _handler(fake: FakeArchive) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            path = urlsplit(self.path).path
            size = int(self.headers.get("Content-Length") or 0)
            form = {k: v[-1] for k, v in parse_qs(self.rfile.read(size).decode()).items()}
            job = re.fullmatch(r"/tap-server/tap/async/([^/]+)/(phase|results/result)", path)
            if method == "POST" and path == "/tap-server/tap/async":
                endpoint = "async"
            elif method == "GET" and job:
                endpoint = "phase" if job[2] == "phase" else "result"
            elif method == "POST" and path == "/data-server/data":
                endpoint = "data"
            elif path.startswith("/tap-server/tap/notification"):
                return self._send(200, b"", "text/plain")
            else:
                return self._send(404, f"no such resource: {method} {path}".encode(),
                                  "text/plain")
            ids = tuple(int(x) for x in form.get("ID", "").split(",") if x.strip())
            req = fake._record(endpoint, path, ids)
            if self._fault_first(req):
                return
            try:
                status, body, kind = self._answer(endpoint, form, job, ids, req.fault)
            except LookupError as err:
                return self._send(400, str(err).encode(), "text/plain")
            if req.fault == "cut" or (req.fault == "truncate" and endpoint == "phase"):
                return self._send(status, body, kind, cut=True)
            self._send(status, body, kind)

        def _fault_first(self, req: Request) -> bool:
            """Faults that replace the answer; True when the request is done with."""
            if req.fault in ("500", "503"):
                text = f"{req.fault} fault injected by the fake archive".encode()
                self._send(int(req.fault), text, "text/plain")
                return True
            if req.fault == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return True
            if req.fault == "slow":
                fake._stopped.wait(fake.slow_s)
            if req.fault == "stall":
                fake._released.wait()
            return fake._stopped.is_set()

        def _answer(self, endpoint: str, form: dict[str, str], job: re.Match | None,
                    ids: tuple[int, ...], fault: str | None) -> tuple[int, bytes, str]:
            if endpoint == "async":
                if form.get("REQUEST") != "doQuery" or form.get("LANG") != "ADQL":
                    raise LookupError(f"not an ADQL doQuery request: {form}")
                answer = fake.query_answer(form.get("QUERY", ""))
                with fake._lock:
                    jobid = f"{len(fake._jobs) + 1:06d}"
                    fake._jobs[jobid] = (answer, form.get("FORMAT", "votable"))
                self.location = f"{fake.url}tap-server/tap/async/{jobid}"
                return 303, b"", "text/plain"
            if endpoint == "phase":
                if job[1] not in fake._jobs:
                    raise LookupError(f"no job {job[1]}")
                return 200, b"COMPLETED", "text/plain"
            if endpoint == "result":
                if job[1] not in fake._jobs:
                    raise LookupError(f"no job {job[1]}")
                answer, fmt = fake._jobs[job[1]]
                if fault == "truncate":
                    answer = answer[:len(answer) // 2]
                body = gzip.compress(answer, mtime=0) if fmt == "votable_gzip" else answer
                return 200, body, "application/x-votable+xml"
            want = {"RETRIEVAL_TYPE": "EPOCH_PHOTOMETRY", "DATA_STRUCTURE": "INDIVIDUAL",
                    "FORMAT": "votable"}
            if any(form.get(k) != v for k, v in want.items()) or not ids:
                raise LookupError(f"the fake serves INDIVIDUAL votable EPOCH_PHOTOMETRY by ID "
                                  f"only, not {form}")
            if len(ids) > 5000:
                raise LookupError(f"{len(ids)} ids: the archive takes at most 5000 a call")
            drop = None
            if fault == "short":
                rule_star = [r.star for r in fake.rules if r.fault == "short" and r.star in ids]
                drop = rule_star[0] if rule_star else ids[-1]
            body = fake.datalink_answer(ids, drop=drop, cut_last=fault == "truncate")
            return 200, body, "application/zip"

        def _send(self, status: int, body: bytes, kind: str, *, cut: bool = False) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if status == 303:
                    self.send_header("Location", self.location)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                if cut:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
            except OSError:  # the client gave up (timeout) before the answer
                self.close_connection = True

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve the fake archive until SIGTERM or Ctrl-C."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0: chosen by the OS")
    ap.add_argument("--faults", nargs="*", default=[], help="e.g. data#2=503 data@ID=stall")
    ap.add_argument("--slow-s", type=float, default=5.0, help="delay of the slow fault")
    ap.add_argument("--stars", type=int, default=24, help="stars with epoch photometry")
    ap.add_argument("--log", default=None, help="append every request here (JSON lines)")
    args = ap.parse_args(argv)
    fake = FakeArchive(make_archive(args.stars), args.faults, slow_s=args.slow_s,
                       port=args.port, log_file=args.log)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    fake.start()
    print(f"serving {fake.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
