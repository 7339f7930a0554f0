"""The MLflow pyfunc model `rrl-feh`: raw light curves in, [Fe/H] with its error out.

`load_context` reads the model's own artifacts (both types' ensembles and the settings they were
trained with), never the caller's params.yaml; `predict` is `rrlfeh.serving.pipeline`. The same
object serves `mlflow models serve`, the `score` stage and `rrlfeh predict`.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

from rrlfeh.io import strict_json
from rrlfeh.serving.inputs import RequestError, column_name, read_request
from rrlfeh.serving.pipeline import OUTPUT_COLUMNS, ScoringModel, score_request

ARTIFACT = "scoring_model"

# every input column is optional for MLflow's schema check, and of any type: the pipeline
# (rrlfeh.serving.inputs) names a missing column in one line, where MLflow's own enforcement
# error would echo the whole request back; it reads whole numbers as numbers, ids and types in
# any dtype, and makes text in one star's magnitudes that star's status, where MLflow's cast to
# double refused the whole request
INPUT_COLUMNS = ("source_id", "time", "phase", "mag", "mag_error", "flux", "flux_error",
                 "rejected", "period", "epoch_max", "type", "band")  # band: G, BP or RP
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


# MLflow 3 asks for type hints on predict when the class is defined (a UserWarning on every
# load, forced to show by its own "once" filter, so only a silent showwarning hides it); the
# input here is a frame of several forms, checked by rrlfeh.serving.inputs
with warnings.catch_warnings():
    warnings.showwarning = lambda *args, **kwargs: None

    class RRLFehModel(mlflow.pyfunc.PythonModel):
        """Scores every star of a frame of epochs (see rrlfeh.serving.inputs for the forms)."""

        def load_context(self, context) -> None:
            self.model = ScoringModel.load(context.artifacts[ARTIFACT])
            if _SERVER_APP in sys.modules:  # loaded by `mlflow models serve`'s worker
                _one_line_body_errors()
                _null_not_nan()
            # the loaded TensorFlow graph is a large, long-lived heap: kept out of the collector's
            # full passes (~0.3 s each, the served model's worst latencies otherwise)
            gc.freeze()

        def predict(self, context, model_input, params=None):
            """One row per star of `model_input`, in input order (pipeline.OUTPUT_COLUMNS)."""
            try:
                request = read_request(model_input)
            except RequestError as exc:
                raise RequestRejected(str(exc)) from None
            n_jobs = int((params or {}).get("derive_n_jobs", 1))
            return score_request(request, self.model, derive_n_jobs=n_jobs)


def predict_frame(model: Any, frame: pd.DataFrame, params: dict[str, Any] | None = None
                  ) -> pd.DataFrame:
    """A loaded rrl-feh pyfunc's answer for `frame`, in process, without MLflow's input check:
    every input of the signature is optional and of any type, so that check only passes each
    value through Python one by one (~10 µs a row: 5 s of every 10,000 stars' 450,000 epochs)
    and keeps the signature's columns; here the columns are kept the same way (named as the
    signature spells them) and the frame goes to the model as is. The batch paths use it
    (`rrlfeh predict`, `score`, `sparse`, Spark); the server keeps MLflow's check."""
    from rrlfeh.serving.inputs import signature_columns

    frame = signature_columns(frame)
    frame = frame[[c for c in frame.columns if c in INPUT_COLUMNS]]
    return model.unwrap_python_model().predict(None, frame, params)


def predict_chunks(model: Any, items: Iterable[tuple[Any, pd.DataFrame]],
                   params: dict[str, Any] | None = None, threads: int = 1,
                   processes: int = 1, source: str | None = None
                   ) -> Iterator[tuple[Any, pd.DataFrame]]:
    """(key, `predict_frame` answer) of each (key, frame) of `items`, in their order. With
    `threads` > 1 that many frames are scored at once in threads of this process (the numpy
    and TensorFlow work releases the GIL: both cores of a 2-core machine, one model in
    memory); at most `threads` + 1 frames are held, so memory stays bounded by the chunk size.
    With `processes` > 1 and the model's pinned URI `source`, that many worker processes
    score them instead, each with its own copy of the model (`serving.workers`: no shared GIL,
    a few seconds to start each). `items` is read in the caller's thread, lazily."""
    if int(processes) > 1 and source is not None:
        from rrlfeh.serving.workers import predict_in_processes

        yield from predict_in_processes(source, items, params, int(processes),
                                        mlflow.get_tracking_uri())
        return
    threads = max(1, int(threads))
    if threads == 1:
        for key, frame in items:
            yield key, predict_frame(model, frame, params)
        return
    from concurrent.futures import ThreadPoolExecutor

    from rrlfeh.preprocess.spline import blas_single_thread
    from rrlfeh.serving.workers import in_order

    # one BLAS thread for every chunk at once, held by this thread (the threads' own holds nest
    # in it): tiny matrices on two cores each would oversubscribe them
    with blas_single_thread(), ThreadPoolExecutor(max_workers=threads,
                                                  thread_name_prefix="rrlfeh-score") as pool:
        yield from in_order(pool, functools.partial(predict_frame, model), items, params,
                            threads)


_SERVER_APP = "mlflow.pyfunc.scoring_server.app"
BODY_USAGE = ('send JSON {"dataframe_split": {"columns": [...], "data": [[...], ...]}} or '
              '{"dataframe_records": [{...}, ...]}')
_TABLE_KEYS = ("dataframe_split", "dataframe_records", "inputs", "instances")


def _one_line_body_errors() -> None:
    """Make the scoring server's answers to a body it cannot read one-line 400s.

    MLflow 3.17's scoring server reads the body before any of our code runs, and answers
    - a body that is not JSON (or is empty) from `scoring_server._decode_json_input` with
      "Ensure that input is a valid JSON formatted string. Error: ...\nInput: \n<the body>":
      the whole request echoed back over many lines;
    - a JSON object without a table key with a 900-character paragraph on the MLflow 2.0
      protocol change that lists the wrong keys (always "[]");
    - bad `params` from PyFuncModel.predict, which the server prefixes with "Failed to predict
      data '<the whole frame>'" over many lines.
    The server looks `_decode_json_input` up in its module at every request, so it is wrapped
    there, in the server's worker process only (where the app module is being imported while
    the model loads). Bodies that decode to a readable request pass unchanged; the others get
    `RequestRejected` naming the problem without the body. Idempotent; if a later MLflow
    renames the function nothing is wrapped and MLflow's own messages stand.
    """
    from mlflow.pyfunc import scoring_server

    decode = getattr(scoring_server, "_decode_json_input", None)
    if decode is None or getattr(decode, "_rrlfeh_one_line", False):
        return

    @functools.wraps(decode)
    def one_line_decode(json_input):
        try:
            decoded = decode(json_input)
        except MlflowException as exc:
            cause = exc.__cause__
            if not isinstance(cause, (json.JSONDecodeError, UnicodeDecodeError)):
                raise
            raise RequestRejected(_body_problem(json_input, cause)) from None
        if isinstance(decoded, dict):
            problem = _shape_problem(decoded)
            if problem:
                raise RequestRejected(problem)
            _lower_case_columns(decoded)
        return decoded

    one_line_decode._rrlfeh_one_line = True  # type: ignore[attr-defined]
    scoring_server._decode_json_input = one_line_decode


def _null_not_nan() -> None:
    """Make the scoring server's answers strict JSON: a value a star does not have (NaN, ±inf:
    the period of a star that could not be scored) is null.

    MLflow 3.17 writes the predictions with `json.dump`, which prints Python's bare `NaN`, a
    token that `JSON.parse` and most clients refuse (the whole answer with it). The server looks
    `predictions_to_json` up in its module at every request, so it is wrapped there, like
    `_one_line_body_errors`. Idempotent; a later MLflow that renames it keeps its own output."""
    from mlflow.pyfunc import scoring_server

    for name in ("predictions_to_json", "unwrapped_predictions_to_json"):
        write = getattr(scoring_server, name, None)
        if write is None or getattr(write, "_rrlfeh_null", False):
            continue

        def strict(raw_predictions, output, *args, _write=write, **kwargs):
            if isinstance(raw_predictions, pd.DataFrame):  # the records MLflow would write
                raw_predictions = strict_json(raw_predictions.to_dict(orient="records"))
            return _write(raw_predictions, output, *args, **kwargs)

        strict._rrlfeh_null = True  # type: ignore[attr-defined]
        setattr(scoring_server, name, functools.wraps(write)(strict))


def _body_problem(body: Any, error: ValueError) -> str:
    """One line on why a request body is not JSON, without the body."""
    if isinstance(body, bytes | str) and not body.strip():
        return f"empty request body: {BODY_USAGE}"
    if isinstance(error, UnicodeDecodeError):
        return f"request body is not UTF-8 text (byte {error.start}): {BODY_USAGE}"
    if isinstance(error, json.JSONDecodeError):
        what = f"{error.msg} at line {error.lineno} column {error.colno}"
    else:
        what = str(error).splitlines()[0][:120]
    return f"request body is not JSON ({what}): {BODY_USAGE}"


def _shape_problem(body: dict) -> str | None:
    """Why a decoded JSON object is not a table request with valid params (None when it is).
    Objects in MLflow's chat/completions/embeddings formats are left to MLflow."""
    try:
        from mlflow.pyfunc.utils.serving_data_parser import is_unified_llm_input
    except ImportError:  # a later MLflow: judge the table keys only
        def is_unified_llm_input(_: dict) -> bool:
            return False

    if is_unified_llm_input(body):
        return None
    tables = [k for k in _TABLE_KEYS if k in body]
    if len(tables) != 1:
        keys = [str(k)[:30] for k in list(body)[:8]]
        what = f"keys {keys}" if keys else "an empty object"
        return f"the request JSON needs exactly one table key, got {what}: {BODY_USAGE}"
    problem = _table_problem(tables[0], body[tables[0]])
    if problem:
        return problem
    params = body.get("params")
    if params is None:
        return None
    if not isinstance(params, dict):
        return f"'params' must be an object such as {{\"derive_n_jobs\": 1}}, got " \
               f"{type(params).__name__}"
    n_jobs = params.get("derive_n_jobs", 1)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int):
        return f"params.derive_n_jobs must be an integer, got {type(n_jobs).__name__}"
    return None


def _lower_case_columns(body: dict) -> None:
    """Column names of a table body as the signature spells them (`MAG` -> `mag`), in place:
    MLflow's schema check would drop a column it does not know before our reader sees it."""
    split = body.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list):
        split["columns"] = [column_name(c) for c in split["columns"]]
    records = body.get("dataframe_records")
    if isinstance(records, list):
        body["dataframe_records"] = [{column_name(k): v for k, v in r.items()}
                                     if isinstance(r, dict) else r for r in records]


def _table_problem(key: str, table: Any) -> str | None:
    """What MLflow's parser would silently change in a table: a `dataframe_split` row with more
    or fewer values than columns (padded with NaN, so epochs vanish) and source_id values that
    are not whole numbers (truncated to int64, so stars 1.5 and 1.7 merge)."""
    ids: list[Any] = []
    if key == "dataframe_split" and isinstance(table, dict):
        columns, data = table.get("columns"), table.get("data")
        if not (isinstance(columns, list) and isinstance(data, list)):
            return None
        for i, row in enumerate(data):
            if isinstance(row, list) and len(row) != len(columns):
                return (f"dataframe_split row {i} has {len(row)} values for {len(columns)} "
                        "columns: every row needs one value a column")
        at = [j for j, c in enumerate(columns) if column_name(c) == "source_id"]
        if at:
            ids = [row[at[0]] for row in data if isinstance(row, list) and len(row) > at[0]]
    elif key == "dataframe_records" and isinstance(table, list):
        for record in table:
            if isinstance(record, dict):
                ids += [v for k, v in record.items() if column_name(k) == "source_id"]
    for value in ids:
        if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
            return f"source_id is not an integer: {value!r}"
    return None


def signature() -> Any:
    """Input columns (all optional, any type: see INPUT_COLUMNS), the output table and the one
    param."""
    from mlflow.models import ModelSignature

    inputs = Schema([ColSpec(AnyType(), name, required=False) for name in INPUT_COLUMNS])
    outputs = Schema([ColSpec(_MLFLOW_TYPES[d], name) for name, d in OUTPUT_COLUMNS.items()])
    params = ParamSchema([ParamSpec("derive_n_jobs", "long", 1)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)
