"""params.yaml -> typed, frozen settings: the one place where knobs are read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

SOURCES = ("synthetic", "files", "gaia")


class ConfigError(ValueError):
    """params.yaml is missing a key or holds a value the pipeline cannot use."""


def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class FilesSource:
    """Local extracts: epoch photometry (either Gaia layout), optional stars table, labels."""

    epochs: Path
    labels: Path | None
    stars: Path | None = None


@dataclass(frozen=True)
class GaiaSource:
    """The Gaia archive through astroquery, with a resumable batch cache."""

    labels: Path
    cache_dir: Path
    max_stars: int | None
    batch_size: int
    retries: int
    backoff_s: float
    timeout_s: float
    archive_url: str  # TAP and DataLink base (a fake in tests)
    reask: int        # DataLink calls again for stars an answer left out


GAIA_KEYS = tuple(f.name for f in fields(GaiaSource))


@dataclass(frozen=True)
class AcquireParams:
    """Stage `acquire`: which source writes data/raw, and the knobs of each source."""

    source: str
    out_dir: Path
    synthetic: Mapping[str, Any] = field(default_factory=_frozen)
    files: FilesSource | None = None
    gaia: GaiaSource | None = None
    derive: Mapping[str, Any] = field(default_factory=_frozen)


def _path(value: Any, root: Path) -> Path | None:
    """A params path, relative to the directory holding params.yaml unless absolute."""
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (root / p)


def _section(params: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    if key not in params or not isinstance(params[key], Mapping):
        raise ConfigError(f"params.yaml: section {where}{key} is missing or not a mapping")
    return params[key]


def section(params: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A top-level section of params.yaml, read-only (ConfigError when missing)."""
    return _frozen(_section(params, key, ""))


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The raw params.yaml as a dict (raises ConfigError when absent or not a mapping)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root or pass --params")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def acquire_params(params: Mapping[str, Any], root: Path) -> AcquireParams:
    """Typed settings of stage `acquire`; paths resolved against `root`."""
    a = _section(params, "acquire", "")
    source = a.get("source")
    if source not in SOURCES:
        raise ConfigError(f"acquire.source must be one of {SOURCES}, got {source!r}")
    files = gaia = None
    if "files" in a:
        f = a["files"]
        files = FilesSource(epochs=_path(f.get("epochs"), root),
                            labels=_path(f.get("labels"), root),
                            stars=_path(f.get("stars"), root))
    if "gaia" in a:
        g = a["gaia"]
        missing = [k for k in GAIA_KEYS if k not in g]
        if missing:
            raise ConfigError(f"params.yaml: acquire.gaia lacks {', '.join(missing)}")
        gaia = GaiaSource(labels=_path(g["labels"], root), cache_dir=_path(g["cache_dir"], root),
                          max_stars=g["max_stars"], batch_size=int(g["batch_size"]),
                          retries=int(g["retries"]), backoff_s=float(g["backoff_s"]),
                          timeout_s=float(g["timeout_s"]), archive_url=str(g["archive_url"]),
                          reask=int(g["reask"]))
    if source == "files" and (files is None or files.epochs is None):
        raise ConfigError("acquire.source is 'files' but acquire.files.epochs is not set")
    if source == "gaia" and gaia is None:
        raise ConfigError("acquire.source is 'gaia' but the acquire.gaia section is missing")
    return AcquireParams(source=source, out_dir=_path(a.get("out_dir", "data/raw"), root),
                         synthetic=_frozen(a.get("synthetic")), files=files, gaia=gaia,
                         derive=_frozen(a.get("derive")))


def training_budget(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The active block of `budgets` (chosen by the top-level `budget` key): the epochs, folds
    and repeats that the tune and crossval stages may spend."""
    name = params.get("budget", "default")
    budgets = _section(params, "budgets", "")
    if name not in budgets:
        raise ConfigError(f"budget {name!r} is not one of budgets: {sorted(budgets)}")
    b = budgets[name]
    for key in ("tune", "crossval"):
        if not isinstance(b.get(key), Mapping):
            raise ConfigError(f"budgets.{name}.{key} is missing or not a mapping")
    return _frozen({"name": name, **b})

