"""The Gaia-DR3-scale path on a few thousand stars: `rrlfeh synth-raw` parts (Gaia's RAW layout,
G/BP/RP) scored in process by `rrlfeh score --raw`, SIGKILLed midway and resumed.

The resumed catalogue must hold each star exactly once, with the numbers of an uninterrupted run
(1e-9), and the resume must leave the chunks finished before the kill untouched. Timings and
memory are benchmarks/dr3_scale.py's business, never asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, project_env, run

N_STARS, PART_STARS, CHUNK_STARS = 2400, 600, 200   # 4 parts, 12 chunks


def test_raw_part_is_the_generators_g_epochs_with_bp_and_rp():
    """A part's G rows read by the pipeline's RAW reader are `generate`'s epochs (ids
    renumbered), BP/RP rows exist, and the generator is left as it was."""
    from rrlfeh.data import synthetic
    from rrlfeh.data.layouts import to_epochs
    from rrlfeh.data.synthetic_raw import RawSpec, _labels_skipped, raw_part

    real = synthetic.fit_clean_epochs
    spec = RawSpec(n_stars=250, seed=3, part_stars=100)
    epochs, stars = raw_part(spec, 2)   # the last, short part: 50 stars
    assert synthetic.fit_clean_epochs is real
    assert len(stars) == 50 and stars["source_id"].is_unique
    assert epochs["source_id"].is_monotonic_increasing
    with _labels_skipped():
        drawn = synthetic.generate(50, seed=spec.part_seed(2))
    old = drawn.stars["source_id"].to_numpy()
    new = pd.Series((old >> 35 << 35) + 2 * 100 + 1 + np.arange(old.size), index=old)
    want = drawn.epochs.assign(source_id=new.reindex(drawn.epochs["source_id"]).to_numpy())
    want = want.sort_values(["source_id", "transit_id"], ignore_index=True)
    got = to_epochs(epochs, band="G").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    for band in ("BP", "RP"):
        rows = to_epochs(epochs, band=band)
        assert len(rows) == len(got) and (~rows["rejected"]).mean() > 0.7


def _chunks(cache: Path) -> dict[Path, int]:
    return {f: f.stat().st_mtime_ns for f in cache.glob("chunk_*.parquet")}


@pytest.mark.slow
def test_parts_scored_killed_and_resumed_equal_an_uninterrupted_run(pipeline_project: Path,
                                                                    tmp_path: Path):
    project = tmp_path / "project"
    shutil.copytree(pipeline_project, project, symlinks=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["score"]["chunk_stars"] = CHUNK_STARS
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rrlfeh, data = str(BIN / "rrlfeh"), tmp_path / "dr3"

    run([rrlfeh, "synth-raw", "--stars", str(N_STARS), "--part-stars", str(PART_STARS),
         "--out", str(data)], project)
    assert len(list((data / "epochs").glob("part-*.parquet"))) == N_STARS // PART_STARS
    assert json.loads((data / "manifest.json").read_text())["spec"]["n_stars"] == N_STARS

    def score(out: str) -> list[str]:
        return [rrlfeh, "score", "--raw", str(data), "--out", str(tmp_path / out)]

    cache_root = project / "data/cache/score"
    before = set(cache_root.glob("*"))
    run(score("whole"), project)
    for cache in set(cache_root.glob("*")) - before:   # the next run starts from nothing
        shutil.rmtree(cache)

    proc = subprocess.Popen(score("resumed"), cwd=project, env=project_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, cache = time.monotonic() + 300, None
    while proc.poll() is None and time.monotonic() < deadline:
        new = set(cache_root.glob("*")) - before
        if new and len(_chunks(cache := new.pop())) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    finished = _chunks(cache)
    n_chunks = -(-N_STARS // CHUNK_STARS)
    assert 2 <= len(finished) < n_chunks, f"{len(finished)} of {n_chunks} chunks at the kill"
    assert not (tmp_path / "resumed" / "catalogue.parquet").exists()

    res = run(score("resumed"), project)
    assert {f: t for f, t in _chunks(cache).items() if f in finished} == finished
    assert (f"{n_chunks - len(finished)} chunk(s) scored now, {len(finished)} taken from the "
            "cache") in res.stderr + res.stdout
    whole = pd.read_parquet(tmp_path / "whole" / "catalogue.parquet")
    resumed = pd.read_parquet(tmp_path / "resumed" / "catalogue.parquet")
    stars = pd.read_parquet(data / "stars.parquet", columns=["source_id"])
    for cat in (whole, resumed):
        assert cat["source_id"].is_unique and len(cat) == N_STARS
        assert set(cat["source_id"]) == set(stars["source_id"])
    assert (whole["status"] == "ok").mean() > 0.9
    pd.testing.assert_frame_equal(resumed, whole, check_exact=False, atol=1e-9, rtol=0)
