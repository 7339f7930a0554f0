"""Stage `register` in a trained project: a model identical to a registered version registers
nothing; a changed candidate is a new version, promoted only by the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from conftest import BIN, run


@pytest.fixture()
def work(pipeline_project: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "p"
    shutil.copytree(pipeline_project, dest, symlinks=True)
    return dest


def versions(work: Path):
    uri = f"sqlite:///{work / 'mlflow.db'}"
    # the registry URI too: by default a client's registry follows the process-wide tracking
    # URI, which other tests point at other stores
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client, sorted(client.search_model_versions("name='rrl-feh'"),
                          key=lambda v: int(v.version))


def test_the_default_repro_registered_a_champion_with_its_figures(pipeline_project: Path):
    client, vs = versions(pipeline_project)
    assert [str(v.version) for v in vs] == ["1"]
    champ = client.get_model_version_by_alias("rrl-feh", "champion")
    assert str(champ.version) == "1" and champ.tags["promoted"] == "true"
    cv = json.loads((pipeline_project / "reports/crossval.json").read_text())
    for kind in ("RRab", "RRc"):
        # oof_rmse: the served model's (the stack crossval chose), beside the network's and the
        # relation's, and never above the relation's; the tags say which it is and why
        st = cv[kind]["stack"]
        assert float(champ.tags[f"{kind}.oof_rmse"]) == pytest.approx(st["oof"]["rmse"],
                                                                      abs=1e-6)
        assert float(champ.tags[f"{kind}.network_oof_rmse"]) == pytest.approx(
            cv[kind]["oof"]["rmse"], abs=1e-6)
        assert float(champ.tags[f"{kind}.oof_rmse"]) <= float(
            champ.tags[f"{kind}.relation_oof_rmse"])
        assert champ.tags[f"{kind}.served"] == st["served"] in ("network", "relation", "stack")
        assert champ.tags[f"{kind}.served_reason"] == st["reason"]
    reg = json.loads((pipeline_project / "reports/register.json").read_text())
    assert reg["version"] == 1 and reg["promoted"] and reg["champion_version"] == 1


def test_rerun_of_an_unchanged_model_registers_nothing(work: Path):
    run([str(BIN / "rrlfeh"), "register"], work)
    _, vs = versions(work)
    assert [str(v.version) for v in vs] == ["1"]
    reg = json.loads((work / "reports/register.json").read_text())
    assert not reg["registered"] and reg["decision"].startswith("unchanged")


def test_a_changed_candidate_is_a_new_version_and_the_gate_decides(work: Path):
    params = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(params.replace("batch_size: 4096", "batch_size: 2048"))
    run([str(BIN / "rrlfeh"), "register"], work)
    client, vs = versions(work)
    assert [str(v.version) for v in vs] == ["1", "2"]
    new = vs[1]
    # same ensembles, same stars: equal out-of-fold RMSE does not beat the champion
    assert new.tags["promoted"] == "false" and "equal to champion v1" in new.tags["decision"]
    assert new.tags["compared_with"] == "v1"
    assert str(client.get_model_version_by_alias("rrl-feh", "champion").version) == "1"
    reg = json.loads((work / "reports/register.json").read_text())
    assert reg["version"] == 2 and not reg["promoted"] and reg["champion_version"] == 1
    # 'always' moves the alias to an identical version already registered (nothing new)
    (work / "params.yaml").write_text(params.replace("batch_size: 4096", "batch_size: 2048")
                                      .replace("promote: auto", "promote: always"))
    run([str(BIN / "rrlfeh"), "register"], work)
    client, vs = versions(work)
    assert [str(v.version) for v in vs] == ["1", "2"]
    assert str(client.get_model_version_by_alias("rrl-feh", "champion").version) == "2"
    reg = json.loads((work / "reports/register.json").read_text())
    assert reg["promoted"] and not reg["registered"] and reg["champion_version"] == 2
    assert "register.promote is 'always'" in reg["decision"]
    tags = client.get_model_version("rrl-feh", "2").tags  # its tags say why it is champion now
    assert tags["promoted"] == "true" and tags["compared_with"] == "v1"
    assert "register.promote is 'always'" in tags["decision"]
    # the policy knob overrides the comparison, and says so
    (work / "params.yaml").write_text(params.replace("batch_size: 4096", "batch_size: 1024")
                                      .replace("promote: auto", "promote: always"))
    run([str(BIN / "rrlfeh"), "register"], work)
    client, vs = versions(work)
    assert str(client.get_model_version_by_alias("rrl-feh", "champion").version) == "3"
    assert "register.promote is 'always'" in vs[2].tags["decision"]


def test_a_changed_served_stack_is_a_changed_model(work: Path):
    """The manifest is part of the model (the served stack, the relation, the calibrated
    errors): the same members with another calibration are a new version, not 'unchanged'."""
    path = work / "models/final/RRab/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["error_bins"]["sigma"] = [2 * s for s in manifest["error_bins"]["sigma"]]
    path.write_text(json.dumps(manifest))
    run([str(BIN / "rrlfeh"), "register"], work)
    _, vs = versions(work)
    assert [str(v.version) for v in vs] == ["1", "2"]
    assert vs[0].tags["model_digest"] != vs[1].tags["model_digest"]
