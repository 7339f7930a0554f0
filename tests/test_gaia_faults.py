"""`rrlfeh acquire` with source gaia against a real HTTP fake of the archive that injects faults.

astroquery's own client talks to tests/gaia_archive_fake.py on 127.0.0.1 (acquire.gaia.
archive_url); nothing is injected into the client. Every run must end with each star of the
fake's data exactly once, compared with that data directly, or stop with an error naming what is
missing; a run killed with SIGKILL mid-batch resumes with the unfinished batches only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from gaia_archive_fake import Archive, FakeArchive, make_archive

from rrlfeh import config
from rrlfeh.data import gaia, gaia_client
from rrlfeh.stages import acquire

FAKE = Path(__file__).parent / "gaia_archive_fake.py"
RRLFEH = Path(sys.executable).parent / "rrlfeh"
BATCH = 5
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning",  # astroquery never closes
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def archive() -> Archive:
    return make_archive()


@pytest.fixture
def fake(archive):
    with FakeArchive(archive, slow_s=3.0) as server:
        yield server


def batches(archive: Archive) -> list[list[int]]:
    """The batches the fake must see: the query's ids sorted, BATCH at a time (computed here)."""
    ids = sorted(int(i) for i in archive.query_stars["source_id"])
    return [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)]


def write_params(tmp_path: Path, url: str, archive: Archive, **gaia_knobs) -> Path:
    """A params.yaml choosing the gaia source at `url`, with fast retries and timeouts."""
    labels = tmp_path / "labels.parquet"
    archive.labels.to_parquet(labels)
    knobs = {"labels": str(labels), "cache_dir": "cache", "max_stars": None,
             "batch_size": BATCH, "archive_url": url, "retries": 3, "backoff_s": 0.01,
             "timeout_s": 2.0, "reask": 2, **gaia_knobs}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"acquire": {"source": "gaia", "out_dir": "raw",
                                                "gaia": knobs}}))
    return path


def run_stage(params: Path) -> dict:
    """The acquire stage in this process (as `rrlfeh acquire --params` runs it)."""
    p = config.acquire_params(config.load_params(params), params.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gaia.MissingStarsWarning)
        return acquire.run(p, params.parent / "acquire.json")


def run_cli(params: Path, **kwargs) -> subprocess.CompletedProcess:
    cmd = [str(RRLFEH), "acquire", "--params", str(params),
           "--metrics", str(params.parent / "acquire.json")]
    return subprocess.run(cmd, cwd=params.parent, capture_output=True, text=True, timeout=120,
                          **kwargs)


def assert_exact(raw: Path, archive: Archive) -> None:
    """data/raw holds every star of the fake's data once, equal to it; the star without
    photometry is rejected with the reason."""
    stars = pd.read_parquet(raw / "stars.parquet")
    epochs = pd.read_parquet(raw / "epochs.parquet")
    assert stars["source_id"].is_unique
    assert not epochs.duplicated(["source_id", "transit_id"]).any()
    # the archive has no true [Fe/H]: the synthetic stars' feh_true does not travel
    want = archive.stars.sort_values("source_id", ignore_index=True).assign(feh_true=np.nan)
    pd.testing.assert_frame_equal(stars, want)
    want = archive.epochs.sort_values(["source_id", "time"], ignore_index=True)
    pd.testing.assert_frame_equal(epochs, want)
    rejected = pd.read_parquet(raw / "rejected.parquet")
    assert rejected["source_id"].tolist() == list(archive.no_photometry)
    assert rejected["reason"].tolist() == [gaia.MISSING_REASON]
    labels = pd.read_parquet(raw / "labels.parquet")
    pd.testing.assert_frame_equal(labels.sort_values("source_id", ignore_index=True),
                                  archive.labels.sort_values("source_id", ignore_index=True))


# ---------------------------------------------------------------- every fault kind

TAP_KINDS = {"500", "503", "reset", "slow", "truncate", "cut"}


@pytest.mark.parametrize("kind", ["500", "503", "reset", "slow", "truncate", "cut", "short"])
def test_every_fault_kind_ends_with_every_star_once(kind, fake, archive, tmp_path):
    plan = [f"data#2={kind}", f"data#4={kind}"]
    if kind in TAP_KINDS:  # the job's launch answer is a bodiless 303: nothing to cut there
        plan += [f"async#1={kind}"] * (kind not in ("truncate", "cut"))
        plan += [f"phase#1={kind}", f"result#1={kind}"]
    fake.set_faults(plan)
    run_stage(write_params(tmp_path, fake.url, archive))
    assert_exact(tmp_path / "raw", archive)

    fired = [r for r in fake.log if r.fault]
    assert len(fired) == len(plan)  # every planned fault was met, and each was recovered from
    asked = fake.data_ids()
    expected = batches(archive)
    lost = list(archive.no_photometry)
    if kind == "short":  # a short answer is followed by a call for the stars it left out
        assert asked[1:5] == [expected[1], expected[1][-1:], expected[2],
                              sorted(lost + expected[2][-1:])]
    else:  # the failed call, asked again
        assert asked[1] == asked[2] == expected[1] and asked[3] == asked[4] == expected[2]
    assert sorted({tuple(a) for a in asked if len(a) == BATCH}) == [tuple(b) for b in expected]
    if kind in TAP_KINDS:
        launched = [r.fault for r in fake.requests("async")]
        assert launched == [kind] * (len(plan) == 5) + [None] * 3  # a new job after each fault
    assert not list((tmp_path / "cache" / gaia.WORK_DIR).glob("temp_*"))


def test_cli_under_mixed_faults_exits_0_with_every_star(fake, archive, tmp_path):
    fake.set_faults(["async#1=503", "result#1=truncate", "data#1=reset", "data#2=short",
                     "data#4=slow", "data#6=cut", "data#7=500", "data#9=truncate"])
    done = run_cli(write_params(tmp_path, fake.url, archive))
    assert done.returncode == 0, done.stderr
    assert_exact(tmp_path / "raw", archive)
    metrics = json.loads((tmp_path / "acquire.json").read_text())
    assert metrics["n_stars"] == len(archive.stars) and metrics["n_rejected"] == 1
    assert len([r for r in fake.log if r.fault]) == 8
    assert "retry" in done.stderr and "asking for them again" in done.stderr
    assert not list(tmp_path.glob("temp_*"))  # astroquery's unpacking stays in the cache


def test_a_star_always_left_out_is_rejected_with_the_reason(fake, archive, tmp_path):
    # the archive answers, but never with this star: asked 1 + reask times, then set aside
    star = batches(archive)[1][2]
    fake.set_faults([f"data@{star}=short"])
    run_stage(write_params(tmp_path, fake.url, archive))
    assert [ids for ids in fake.data_ids() if ids == [star]] == [[star], [star]]
    rejected = pd.read_parquet(tmp_path / "raw" / "rejected.parquet")
    assert sorted(rejected["source_id"]) == sorted([star, *archive.no_photometry])
    assert set(rejected["reason"]) == {gaia.MISSING_REASON}
    stars = pd.read_parquet(tmp_path / "raw" / "stars.parquet")
    assert sorted(stars["source_id"]) == sorted(set(archive.stars["source_id"]) - {star})


# ---------------------------------------------------------------- persistent faults

def test_persistent_fault_stops_naming_the_batch_and_its_stars(fake, archive, tmp_path):
    second = batches(archive)[1]
    fake.set_faults([f"data@{second[0]}=503"])
    done = run_cli(write_params(tmp_path, fake.url, archive))
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()[-1]
    assert err.startswith("rrlfeh acquire: error: EPOCH_PHOTOMETRY batch 2/5")
    assert "after 4 attempts" in err and "Error 503" in err
    assert f"not fetched: 5 stars, source_id {second}" in err
    assert not (tmp_path / "raw").exists()  # nothing half-written
    cached = sorted((tmp_path / "cache").glob(f"{gaia.BATCH_PREFIX}-*"))
    assert [p.name.split("-")[2] for p in cached] == ["00000"]  # batch 1 kept for a rerun


def test_persistent_fault_on_a_reask_names_the_missing_star(fake, archive, tmp_path):
    second = batches(archive)[1]
    fake.set_faults(["data#2=short", f"data@{second[-1]}=reset"])
    with pytest.raises(gaia.BatchFailed) as err:
        run_stage(write_params(tmp_path, fake.url, archive))
    text = str(err.value)
    assert "batch 2/5" in text and "re-ask 1/2" in text and "ConnectionResetError" in text
    assert text.endswith(f"not fetched: 1 stars, source_id {[second[-1]]}")


def test_persistent_query_fault_stops(fake, archive, tmp_path):
    fake.set_faults(["result=truncate"])
    with pytest.raises(gaia.BatchFailed, match="vari_rrlyrae query failed after 4 attempts"):
        run_stage(write_params(tmp_path, fake.url, archive))
    assert len(fake.requests("async")) == 4 and not fake.requests("data")


# ---------------------------------------------------------------- kill -9 and resume

def test_kill_9_mid_batch_then_rerun_fetches_only_unfinished_batches(fake, archive, tmp_path):
    plan = batches(archive)
    fake.set_faults([f"data@{plan[2][0]}=stall"])  # batch 3 gets no answer until released
    params = write_params(tmp_path, fake.url, archive, timeout_s=60.0)
    cmd = [str(RRLFEH), "acquire", "--params", str(params)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        fake.wait_for("data", plan[2][0], timeout_s=90)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    cache = tmp_path / "cache"
    files = sorted(p.name for p in cache.iterdir() if p.name.startswith(gaia.BATCH_PREFIX))
    assert [name.split("-")[2] for name in files] == ["00000", "00001"]  # no partial batch 3
    for name in files:
        assert len(pd.read_parquet(cache / name))
    assert list((cache / gaia.WORK_DIR).glob("temp_*"))  # astroquery's download of batch 3
    assert not (tmp_path / "raw").exists()
    before = len(fake.log)

    fake.set_faults([])
    done = run_cli(params)
    assert done.returncode == 0, done.stderr
    rerun = fake.log[before:]
    assert {r.endpoint for r in rerun} == {"data"}  # no query: its answer was cached
    lost = list(archive.no_photometry)  # in batch 3, re-asked twice
    assert [list(r.ids) for r in rerun] == [plan[2], lost, lost, plan[3], plan[4]]
    assert_exact(tmp_path / "raw", archive)
    assert not list((cache / gaia.WORK_DIR).glob("temp_*"))


# ---------------------------------------------------------------- the fake standalone, the URL

def test_standalone_fake_serves_a_subprocess_plan(archive, tmp_path):
    log_file = tmp_path / "requests.jsonl"
    server = subprocess.Popen([sys.executable, str(FAKE), "--port", "0", "--log", str(log_file),
                               "--faults", "async#1=reset", "data#3=503"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:")
        url = line.split()[1]
        run_stage(write_params(tmp_path, url, archive))
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    assert_exact(tmp_path / "raw", archive)
    logged = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert [(r["endpoint"], r["fault"]) for r in logged if r["fault"]] == [("async", "reset"),
                                                                           ("data", "503")]
    data = [r["ids"] for r in logged if r["endpoint"] == "data"]
    lost = list(archive.no_photometry)
    assert data == [*batches(archive)[:3], batches(archive)[2], lost, lost,
                    *batches(archive)[3:]]


def test_archive_url_gives_probe_host_port_and_tls(tmp_path):
    assert gaia_client.parse_archive_url(gaia_client.ARCHIVE_URL) == ("gea.esac.esa.int", 443, True)
    assert gaia_client.parse_archive_url("http://127.0.0.1:8123/") == ("127.0.0.1", 8123, False)
    assert gaia_client.parse_archive_url("http://localhost") == ("localhost", 80, False)
    for bad in ("ftp://gea.esac.esa.int/", "https://gea.esac.esa.int/tap-server/tap", "gea"):
        with pytest.raises(ValueError, match="archive_url"):
            gaia_client.parse_archive_url(bad)
    p = config.acquire_params(yaml.safe_load((Path(__file__).parents[1] / "params.yaml")
                                             .read_text()), tmp_path)
    assert p.gaia.archive_url == gaia_client.ARCHIVE_URL and p.gaia.reask >= 1
    with pytest.raises(gaia.ArchiveUnreachable, match="127.0.0.1:9"):
        gaia_client.gaia_client(archive_url="http://127.0.0.1:9/", probe_timeout_s=2.0)


def test_astroquery_import_makes_no_archive_call():
    code = """
import socket, sys
seen = []
real = socket.getaddrinfo
socket.getaddrinfo = lambda host, *a, **k: seen.append(host) or real(host, *a, **k)
from rrlfeh.data import gaia_client
cls = gaia_client._gaia_class()
assert cls.__name__ == "GaiaClass" and "astroquery.gaia" in sys.modules
sys.exit(1 if seen else 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # astroquery's "Status messages could not be retrieved" is muted
