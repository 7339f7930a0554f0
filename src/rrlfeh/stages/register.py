"""Stage `register`: the trained ensembles as one MLflow pyfunc model, a new version of `rrl-feh`
in the Model Registry, and the champion gate. reports/register.json records the version and the
decision (a DVC output, so `score` reruns when the champion changes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrlfeh.io import write_json

log = logging.getLogger(__name__)


def _versions(client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []


def _champion(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _gate_tags(decision: Any, champion: Any) -> dict[str, str]:
    """A version's tags from the gate's decision: why, against which champion, promoted."""
    return {"decision": decision.reason,
            "compared_with": f"v{champion.version}" if champion else "none",
            "promoted": str(decision.promote).lower()}


def run(final_dir: Path, processed_dir: Path, raw_dir: Path, params: Mapping[str, Any],
        root: Path, metrics_path: Path) -> dict[str, Any]:
    """Build, log and register the candidate; move the alias when the gate says so."""
    import mlflow

    from rrlfeh import config
    from rrlfeh.serving import registry
    from rrlfeh.serving.pyfunc import ARTIFACT, RRLFehModel, signature
    from rrlfeh.training.tracking import TrackingSettings, setup_tracking, stage_run

    # the cloudpickle note and MLflow's own input-example check (we check it below ourselves)
    for name in ("mlflow.pyfunc", "mlflow.models.model"):
        logging.getLogger(name).setLevel(logging.ERROR)
    r = config.section(params, "register")
    name, alias = str(r["model_name"]), str(r["alias"])
    setup_tracking(TrackingSettings.from_params(config.section(params, "tracking"), root))
    client = mlflow.MlflowClient()
    folder = root / r.get("build_dir", "data/cache/register/model")
    settings = registry.build_model_folder(final_dir, processed_dir, params, folder)
    digest = registry.model_digest(folder)
    tags = registry.candidate_tags(settings, digest)
    champion = _champion(client, name, alias)
    same = [v for v in _versions(client, name) if v.tags.get("model_digest") == digest]
    if same:
        v = same[0]
        decision = f"unchanged: the same model is version {v.version}; nothing registered"
        promoted = False
        if (str(r.get("promote", "auto")) == "always" and champion is not None
                and str(champion.version) != str(v.version)):  # the knob still moves the alias
            gate = registry.gate(tags, champion.tags, champion.version, "always")
            if gate.promote:
                for key, value in _gate_tags(gate, champion).items():  # not its old verdict
                    client.set_model_version_tag(name, v.version, key, value)
                client.set_registered_model_alias(name, alias, v.version)
                promoted, decision = True, f"{decision}; {gate.reason}, the alias moved to it"
        result = {"model_name": name, "alias": alias, "version": int(v.version),
                  "registered": False, "promoted": promoted,
                  "champion_version": int(v.version) if promoted else (
                      int(champion.version) if champion else None),
                  "decision": decision, "model_digest": digest}
        log.info("register: %s", result["decision"])
        write_json(result, metrics_path)
        return result

    with stage_run("register", stage="register", root=root, params={"register": dict(r)},
                   tags={"model_digest": digest},
                   inputs=[*(processed_dir / f"{k}.npz" for k in settings["types"]),
                           *(final_dir / k / "manifest.json" for k in settings["types"]),
                           raw_dir / "epochs.parquet"]) as run:
        pre = params["preprocess"]
        folded = ((root / pre["folded"]["curves"], str(pre["folded"].get("type", "RRab")))
                  if pre.get("source") == "folded" else None)
        example = registry.input_example(raw_dir, int(r.get("example_stars", 2)),
                                         settings["types"], folded)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=RRLFehModel(), artifacts={ARTIFACT: str(folder)},
            signature=signature(), input_example=example,
            pip_requirements=registry.pip_requirements())
        check = mlflow.pyfunc.load_model(info.model_uri).predict(example)
        if not (check["status"] == "ok").any():
            raise ValueError(f"register: the logged model scores none of its input example "
                             f"stars: {check['status'].tolist()}")
        version = str(mlflow.register_model(info.model_uri, name).version)
        decision = registry.gate(tags, champion.tags if champion else None,
                                 champion.version if champion else None,
                                 str(r.get("promote", "auto")))
        for key, value in {**tags, **_gate_tags(decision, champion)}.items():
            client.set_model_version_tag(name, version, key, value)
        if decision.promote:
            client.set_registered_model_alias(name, alias, version)
        mlflow.set_tags({"registered_version": version, "decision": decision.reason,
                         "promoted": str(decision.promote).lower()})
        mlflow.log_dict({"decision": decision.reason, "compared": decision.compared},
                        "gate.json")
        run_id = run.info.run_id
    result = {"model_name": name, "alias": alias, "version": int(version), "registered": True,
              "promoted": decision.promote,
              "champion_version": int(version) if decision.promote else (
                  int(champion.version) if champion else None),
              "decision": decision.reason, "compared": decision.compared,
              "model_digest": digest, "run_id": run_id}
    log.info("register: %s v%s; %s", name, version, decision.reason)
    write_json(result, metrics_path)
    return result
