"""params.yaml -> typed settings, and the errors a user sees for a bad one."""

from pathlib import Path

import pytest
import yaml

from rrlfeh import config

from conftest import REPO


def test_repository_params_load_and_resolve_paths():
    params = config.load_params(REPO / "params.yaml")
    p = config.acquire_params(params, REPO)
    assert p.source in config.SOURCES
    assert p.out_dir == REPO / "data" / "raw"
    assert p.files.epochs.is_absolute()
    assert p.gaia.batch_size <= 5000


def test_unknown_source_is_named(tmp_path: Path):
    params = {"acquire": {"source": "sdss", "out_dir": "data/raw"}}
    with pytest.raises(config.ConfigError, match="sdss"):
        config.acquire_params(params, tmp_path)


def test_files_source_needs_an_epochs_path(tmp_path: Path):
    params = {"acquire": {"source": "files", "files": {"labels": "x.csv"}}}
    with pytest.raises(config.ConfigError, match="acquire.files.epochs"):
        config.acquire_params(params, tmp_path)


def test_missing_params_file_is_named(tmp_path: Path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load_params(tmp_path / "params.yaml")


def test_absolute_paths_are_kept(tmp_path: Path):
    f = tmp_path / "p.yaml"
    params = {"acquire": {"source": "files", "files": {"epochs": "/abs/e.parquet"}}}
    f.write_text(yaml.safe_dump(params))
    p = config.acquire_params(config.load_params(f), tmp_path)
    assert p.files.epochs == Path("/abs/e.parquet")
    assert p.files.labels is None


def test_a_gaia_section_without_a_key_names_it():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["acquire"]["gaia"]["archive_url"], params["acquire"]["gaia"]["reask"]
    with pytest.raises(config.ConfigError, match="acquire.gaia lacks archive_url, reask"):
        config.acquire_params(params, REPO)
