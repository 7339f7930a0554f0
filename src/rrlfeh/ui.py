"""`rrlfeh ui`: the MLflow UI of the project's store, opened on the runs with Table 1's columns.

MLflow 3's UI opens an experiment on its GenAI overview (traces, token usage) unless the browser
chose "Model training" before (localStorage `mlflow.workflowType`), and shows no metric column
until one is picked. Both can be set by the address: the URL parameter `workflowType=
machine_learning` overrides the stored choice, and `viewStateShareKey=<key>` loads the runs view
(columns, sort, filter) saved in the experiment tag `mlflow.sharedViewState.<key>`, in the
envelope the UI's own "Save as new view" writes: JSON `{name, createdAt, updatedAt, state}` whose
`state` is the JSON text of the view (`selectedColumns` as `metrics.`+"`name`", `tags.`+"`name`",
`orderByKey`, `orderByAsc`, `searchFilter`, ...). The view also shows in the UI's saved views.
So this writes that tag (only when it differs), prints the landing address and starts `mlflow ui`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

VIEW_KEY = "table1"                      # the share key of the view
VIEW_NAME = "Table 1"                    # its name in the UI's saved views
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# Table 1 per type: the test split (train runs), K-fold validation mean and out of fold (crossval
# runs; train runs log out of fold too), the classical line's test RMSE (train runs)
TABLE1_METRICS = ("test_rmse", "test_r2", "val_rmse_mean", "val_r2_mean", "oof_rmse", "oof_r2",
                  "relation_test_rmse")
# the type, the stage, and the gate's decision (register runs)
TABLE1_TAGS = ("rr_type", "dvc.stage", "decision")


def column(kind: str, name: str) -> str:
    """A column key of the runs table: `metrics.`+"`test_rmse`" (the UI's canonical sort key)."""
    return f"{kind}.`{name}`"


def view_state(metrics: Sequence[str] = TABLE1_METRICS,
               tags: Sequence[str] = TABLE1_TAGS) -> dict[str, Any]:
    """The runs view: the tags, then the metrics as columns, newest runs first, no filter."""
    return {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False,
            "selectedColumns": [*(column("tags", t) for t in tags),
                                *(column("metrics", m) for m in metrics)]}


def _envelope(state: Mapping[str, Any], created_ms: int, updated_ms: int) -> str:
    return json.dumps({"name": VIEW_NAME, "createdAt": created_ms, "updatedAt": updated_ms,
                       "state": json.dumps(state, separators=(",", ":"))},
                      separators=(",", ":"))


def _stored_state(value: str | None) -> tuple[dict[str, Any] | None, int | None]:
    """(state, createdAt) of a tag value in the envelope, or (None, None)."""
    try:
        env = json.loads(value or "")
        return json.loads(env["state"]), int(env["createdAt"])
    except (ValueError, TypeError, KeyError):
        return None, None


def write_view(client: Any, experiment_id: str, key: str = VIEW_KEY,
               state: Mapping[str, Any] | None = None) -> bool:
    """Set the experiment's shared view `key` to `state` (Table 1's by default); False when it
    was already so (the tag is left alone)."""
    state = dict(state if state is not None else view_state())
    tag = f"{VIEW_TAG_PREFIX}{key}"
    stored, created = _stored_state(client.get_experiment(experiment_id).tags.get(tag))
    if stored == state:
        return False
    now = int(time.time() * 1000)
    client.set_experiment_tag(experiment_id, tag, _envelope(state, created or now, now))
    return True


def landing_url(base: str, experiment_id: str, key: str = VIEW_KEY) -> str:
    """The runs page of the experiment, in the "Model training" sidebar, with the view `key`."""
    query = urlencode({"workflowType": "machine_learning", "viewStateShareKey": key})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def run(tracking: Mapping[str, Any], root: Path, *, host: str = "127.0.0.1", port: int = 5000,
        workers: int = 1, serve: bool = True) -> None:
    """Write the view, print where to look and (serve) replace this process by `mlflow ui`."""
    from mlflow import MlflowClient

    from rrlfeh.training.tracking import TrackingSettings, setup_tracking

    settings = TrackingSettings.from_params(tracking, root)
    remote = settings.uri.startswith(("http://", "https://"))
    exp_id = setup_tracking(settings)
    changed = write_view(MlflowClient(settings.uri), exp_id)
    base = settings.uri if remote else f"http://{host}:{port}"
    print(f"MLflow UI of {settings.uri}, experiment {settings.experiment!r} (id {exp_id}), "
          f"Table 1 view {'written' if changed else 'up to date'}.")
    print(f"Open: {landing_url(base, exp_id)}")
    print("  the runs (Model training): tags rr_type, dvc.stage, decision and the metrics "
          f"{', '.join(TABLE1_METRICS)}; expand a parent run for its folds or trials")
    print(f"  the registry: the sidebar's 'Model registry' link ({base.rstrip('/')}/#/models)")
    sys.stdout.flush()
    if not serve or remote:
        return
    beside = Path(sys.executable).parent / "mlflow"   # the venv's, else the one on PATH
    mlflow = str(beside) if beside.is_file() else shutil.which("mlflow") or "mlflow"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # the server's job runner (GenAI judges, trace rollups: 7 processes) has nothing to do here
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execvp(mlflow, [mlflow, "ui", "--backend-store-uri", settings.uri, "-h", host,
                      "-p", str(port), "-w", str(workers)])
