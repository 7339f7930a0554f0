"""`rrlfeh ui` in a real browser: a fresh headless Chromium profile opening the printed address
lands on the experiment's runs (not MLflow 3's GenAI overview) with Table 1's columns and values.

The store is a temporary one with runs shaped like the pipeline's (a crossval parent with nested
folds, `train RRab` / `train RRc`, the register run with the gate's decision), logged here rather
than by the pipeline. Chromium is Debian's (installed with apt-get when missing; skipped only when
that cannot be done); the page is read with `chromium --headless --dump-dom` under a virtual-time
budget (time runs ahead only while no request is pending), so no browser-driver package is needed.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, project_env

pytestmark = pytest.mark.slow

# per run name: (tags, metrics); the values are distinctive so that a cell can only be this one
TYPES = {"RRab": 0.111111, "RRc": 0.222222}
RUNS: dict[str, tuple[dict[str, str], dict[str, float]]] = {
    **{f"crossval {t}": ({"dvc.stage": "crossval", "rr_type": t},
                         {"val_rmse_mean": v + 0.01, "val_r2_mean": 0.9, "oof_rmse": v + 0.02,
                          "oof_r2": 0.89}) for t, v in TYPES.items()},
    **{f"train {t}": ({"dvc.stage": "train", "rr_type": t},
                      {"test_rmse": v, "test_r2": 0.93, "oof_rmse": v + 0.02, "oof_r2": 0.89,
                       "relation_test_rmse": v + 0.03, "test_mae": 0.05})
       for t, v in TYPES.items()},
    "register": ({"dvc.stage": "register", "decision": "promoted: there was no champion",
                  "promoted": "true"}, {}),
}
FOLDS = ("RRab fold r1_k1", "RRab fold r1_k2")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # HTML elements without an end tag
TABLE1_HEADERS = ("test_rmse", "test_r2", "val_rmse_mean", "val_r2_mean", "oof_rmse", "oof_r2",
                  "relation_test_rmse")


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (skip when that is not possible)."""
    found = shutil.which("chromium")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and apt-get is not available to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    res = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:  # stale package lists: refresh once
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, timeout=600)
        res = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    found = shutil.which("chromium")
    if res.returncode != 0 or found is None:
        pytest.skip(f"apt-get could not install chromium: {(res.stderr or res.stdout)[-300:]}")
    return found


def _log_runs(uri: str) -> None:
    """The pipeline's run shapes in a fresh store (the experiment made as MLflow makes it: no
    kind tag; `rrlfeh ui` must cope)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("rrlfeh")
    ids = {}
    for name, (tags, metrics) in RUNS.items():
        run = client.create_run(exp, run_name=name, tags=tags)
        ids[name] = run.info.run_id
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.log_param(run.info.run_id, "budget.name", "tiny")
        client.set_terminated(run.info.run_id)
    for k, name in enumerate(FOLDS, 1):
        run = client.create_run(exp, run_name=name, tags={
            "mlflow.parentRunId": ids["crossval RRab"], "dvc.stage": "crossval",
            "rr_type": "RRab", "fold": str(k), "repeat": "1"})
        client.log_metric(run.info.run_id, "val_rmse", 0.1 + k / 100)
        client.set_terminated(run.info.run_id)


class _Grid(html.parser.HTMLParser):
    """The runs table of a dumped page: AG Grid rows (the pinned run-name column and the others
    are separate containers, joined by `row-index`) as {row index: {column id: text}}, and the
    header labels."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.headers: set[str] = set()
        self._row: str | None = None
        self._cell: tuple[str, int, list[str]] | None = None  # (column id, depth, text)
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in VOID:
            return
        self._depth += 1
        if a.get("role") == "row" and a.get("row-index") is not None:
            self._row = a["row-index"]
        if a.get("role") == "gridcell" and a.get("col-id") and self._row is not None:
            self._cell = (a["col-id"] or "", self._depth, [])
        tid = a.get("data-testid") or ""
        if tid.startswith("sort-header-"):
            self.headers.add(tid.removeprefix("sort-header-"))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self._cell is not None and self._depth == self._cell[1]:
            col, _, text = self._cell
            self.rows.setdefault(self._row or "", {})[col] = "".join(text).strip()
            self._cell = None
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[2].append(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(base: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"rrlfeh ui ended ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the MLflow server did not answer in {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def _dump(chromium: str, url: str, profile: Path) -> str:
    """The page's DOM once loaded, from a fresh profile (no stored sidebar choice)."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
           "--window-size=2400,1400", "--virtual-time-budget=20000", "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_ui_lands_on_the_runs_with_table1_columns(tmp_path: Path):
    chromium = _chromium()
    t0 = time.monotonic()
    (tmp_path / "params.yaml").write_text(
        "tracking:\n  uri: sqlite:///mlflow.db\n  artifact_root: mlartifacts\n"
        "  experiment: rrlfeh\n")
    _log_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    port, log = _free_port(), tmp_path / "ui.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "rrlfeh"), "ui", "--params", "params.yaml",
                                 "--port", str(port)], cwd=tmp_path, env=project_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        found, end = None, time.monotonic() + 60
        while found is None and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.2)
            found = re.search(r"^Open: (\S+)", log.read_text(), re.M)
        assert found, f"no address printed:\n{log.read_text()[-2000:]}"
        url = found.group(1)
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert "workflowType=machine_learning" in url and "viewStateShareKey=" in url
        assert "Model registry" in log.read_text()
        # the view tag is written once: a second call finds it as it should be
        from mlflow import MlflowClient

        from rrlfeh.ui import write_view

        exp_id = re.search(r"#/experiments/(\d+)/", url).group(1)
        assert not write_view(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), exp_id)
        _wait_up(f"http://127.0.0.1:{port}", proc, log)

        for attempt in range(2):  # a second fresh profile if the first dump came too early
            dom = _dump(chromium, url, tmp_path / f"profile{attempt}")
            grid = _Grid()
            grid.feed(dom)
            names = {c.get("attributes.`Run Name`", "") for c in grid.rows.values()}
            if any("train RRab" in n for n in names):
                break
        (tmp_path / "page.html").write_text(dom)
        where = f"(page in {tmp_path / 'page.html'})"

        # the training runs view, not the GenAI overview
        assert "Token Usage" not in dom and "Error loading shared view state" not in dom, where
        assert 'data-testid="sort-header-' in dom, f"no runs table {where}"
        for name in RUNS:
            assert any(name in n for n in names), f"run {name!r} not in the table {where}"
        # the Table 1 columns, with the values logged
        missing = [h for h in TABLE1_HEADERS if h not in grid.headers]
        assert not missing, f"columns {missing} not shown (headers: {sorted(grid.headers)})"
        for t, v in TYPES.items():
            row = next(c for c in grid.rows.values()
                       if c.get("attributes.`Run Name`", "").endswith(f"train {t}"))
            assert float(row["metrics.`test_rmse`"]) == pytest.approx(v), row
            assert float(row["metrics.`relation_test_rmse`"]) == pytest.approx(v + 0.03), row
            assert row["tags.`rr_type`"] == t, row
            cv = next(c for c in grid.rows.values()
                      if c.get("attributes.`Run Name`", "").endswith(f"crossval {t}"))
            assert float(cv["metrics.`val_rmse_mean`"]) == pytest.approx(v + 0.01), cv
        reg = next(c for c in grid.rows.values()
                   if c.get("attributes.`Run Name`", "").endswith("register"))
        assert reg["tags.`decision`"] == "promoted: there was no champion", reg
        # folds stay nested under their parent: collapsed, not top-level rows
        assert not any(f in n for f in FOLDS for n in names), names
        assert time.monotonic() - t0 < 120, f"took {time.monotonic() - t0:.0f} s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
