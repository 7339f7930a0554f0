"""One resolver of the model a command scores with: `models:/name@alias` pinned to the version
the alias points at now (so a whole run, and every Spark executor, uses one version even if
the alias moves), with the version named for the logs and the outputs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ResolvedModel:
    """The URI asked for, the URI loaded (`models:/name/<version>`) and the version ('?' for a
    path or a run URI, which have none)."""

    uri: str
    pinned: str
    version: str

    def describe(self) -> str:
        """'models:/rrl-feh@champion (version 3)', for a log line."""
        return self.uri if self.version == "?" else f"{self.uri} (version {self.version})"


def resolve(uri: str) -> ResolvedModel:
    """The registry version behind `uri`; FileNotFoundError naming the URI when the registry
    has no such model or alias."""
    import mlflow

    if not uri.startswith("models:/"):
        return ResolvedModel(uri, uri, "?")
    name, _, rest = uri.removeprefix("models:/").partition("@")
    if rest:
        with _not_in_registry(uri):
            version = str(mlflow.MlflowClient().get_model_version_by_alias(name, rest).version)
        return ResolvedModel(uri, f"models:/{name}/{version}", version)
    return ResolvedModel(uri, uri, uri.rsplit("/", 1)[-1])


@contextlib.contextmanager
def _not_in_registry(uri: str) -> Iterator[None]:
    """MLflow's error inside the block as FileNotFoundError naming `uri` and what to run."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise FileNotFoundError(f"cannot load {uri} from the registry ({str(exc)[:200]}); run "
                                "`rrlfeh register` (dvc repro register)") from exc


def load(uri: str):
    """(the pyfunc model, its ResolvedModel) of `uri`, loaded at the pinned version."""
    model = resolve(uri)
    return load_resolved(model), model


def load_resolved(model: ResolvedModel):
    """The pyfunc model at `model.pinned` (FileNotFoundError naming the URI when it cannot be
    loaded)."""
    import mlflow

    with _not_in_registry(model.uri):
        return mlflow.pyfunc.load_model(model.pinned)


def model_uuid(model: ResolvedModel) -> str:
    """The uuid of the model at `model.pinned`, from its MLmodel file alone (no TensorFlow:
    what a process that only hands chunks to workers needs; FileNotFoundError as `load`)."""
    import mlflow

    with _not_in_registry(model.uri):
        return str(mlflow.models.get_model_info(model.pinned).model_uuid)
