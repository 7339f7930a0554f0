"""Shared test fixtures: where the real data lives (../shared/data unless RRLFEH_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real-data folder: $RRLFEH_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("RRLFEH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when the real data are not there."""
    path = shared_data_dir()
    if not (path / "gaia_dr3" / "epoch_photometry.parquet").exists():
        pytest.skip(f"real data not found at {path}")
    return path
