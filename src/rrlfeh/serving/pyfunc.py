"""The MLflow pyfunc model `rrl-feh`: raw light curves in, [Fe/H] with its error out.

`load_context` reads the model's own artifacts (both types' ensembles and the settings they were
trained with), never the caller's params.yaml; `predict` is `rrlfeh.serving.pipeline`. The same
object serves `mlflow models serve`, the `score` stage and `rrlfeh predict`.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from rrlfeh.serving.inputs import RequestError, read_request
from rrlfeh.serving.pipeline import OUTPUT_COLUMNS, ScoringModel, score_request

ARTIFACT = "scoring_model"

# every input column is optional for MLflow's schema check: the pipeline names what is missing
# in one line, where MLflow's own enforcement error would echo the whole request back
INPUT_COLUMNS: dict[str, str] = {
    "source_id": "long", "time": "double", "phase": "double", "mag": "double",
    "mag_error": "double", "flux": "double", "flux_error": "double", "rejected": "boolean",
    "period": "double", "epoch_max": "double", "type": "string",
}
_MLFLOW_TYPES = {"int64": "long", "float64": "double", "bool": "boolean", "string": "string"}


class RequestRejected(MlflowException):
    """A malformed request: a 400 whose message is our one line. MLflow's scoring server
    (3.17) prefixes the message of an exception from predict with the whole request
    ("Failed to predict data '...'"); the message here is set once and keeps its first value."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._one_line

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_one_line"):
            self._one_line = value


class RRLFehModel(mlflow.pyfunc.PythonModel):
    """Scores every star of a frame of epochs (see rrlfeh.serving.inputs for the forms)."""

    def load_context(self, context) -> None:
        self.model = ScoringModel.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        """One row per star of `model_input`, in input order (pipeline.OUTPUT_COLUMNS)."""
        try:
            request = read_request(model_input)
        except RequestError as exc:
            raise RequestRejected(str(exc)) from None
        n_jobs = int((params or {}).get("derive_n_jobs", 1))
        return score_request(request, self.model, derive_n_jobs=n_jobs)


def signature() -> Any:
    """Input columns (all optional, see INPUT_COLUMNS), the output table and the one param."""
    from mlflow.models import ModelSignature

    inputs = Schema([ColSpec(t, name, required=False) for name, t in INPUT_COLUMNS.items()])
    outputs = Schema([ColSpec(_MLFLOW_TYPES[d], name) for name, d in OUTPUT_COLUMNS.items()])
    params = ParamSchema([ParamSpec("derive_n_jobs", "long", 1)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)
