"""`dvc repro` when one type has too few stars to train (the real DR3 set has 10 labelled RRc):
the pipeline still ends with a champion and a catalogue, and says why the type has no model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import BUILDS, background_build, clone_project, smallest_budget


@background_build("one_type_project")
def _one_type_project(work: Path) -> list[str]:
    def one_small_type(params: dict) -> None:
        params["acquire"]["synthetic"].update(n_stars=300, frac_rrc=0.08)
        smallest_budget(params)

    clone_project(work, one_small_type)
    return ["dvc", "repro", "score"]  # to the catalogue (the report's stages aside)


@pytest.fixture(scope="module")
def one_type_project() -> Path:
    return BUILDS["one_type_project"].wait()


def test_a_type_too_small_to_train_is_skipped_to_the_end(one_type_project: Path):
    work = one_type_project
    cv = json.loads((work / "reports/crossval.json").read_text())
    assert "< tune.min_stars 50" in cv["RRc"]["skipped"] and "val" in cv["RRab"]
    for name in ("learning_curves", "true_vs_predicted", "residuals_vs_epochs"):
        assert (work / f"reports/figures/RRc_{name}.png").stat().st_size > 1000
    reg = json.loads((work / "reports/register.json").read_text())
    assert reg["promoted"] and reg["version"] == 1
    cat = pd.read_parquet(work / "data/scored/catalogue.parquet")
    stars = pd.read_parquet(work / "data/raw/stars.parquet")
    rrc = cat[cat["source_id"].isin(stars.loc[stars["type"] == "RRc", "source_id"])]
    # RRc stars get a value from the RRab model, flagged out of domain with the reason
    assert len(rrc) and (rrc["status"] == "ok").mean() > 0.9
    ok = rrc[rrc["status"] == "ok"]
    assert ok["feh"].notna().all() and not ok["in_domain"].any()
    assert ok["domain_reason"].str.contains("type RRc has no model: scored by the RRab model",
                                            regex=False).all()
    # their periods are checked against the RRab training stars' range
    assert ok["domain_reason"].str.contains("outside the RRab training range").mean() > 0.5
    assert (cat.loc[~cat["source_id"].isin(rrc["source_id"]), "status"] == "ok").mean() > 0.9
