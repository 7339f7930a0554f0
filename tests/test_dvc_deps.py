"""dvc.yaml reruns what it must: every stage lists every module of rrlfeh its command imports and
every input file it reads, and a changed input file reruns exactly the stages it reaches.

The code a stage runs is found here by static analysis, independently of the lists in dvc.yaml:
ast over every import statement (those inside functions too), from `rrlfeh/cli.py`'s module-level
imports, its handler `_<stage>` (with the cli functions it calls) and the part of `main` that runs
for the stage, and from the stage module `rrlfeh/stages/<stage>.py`, to the transitive closure.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_acquire import individual_layout

from conftest import BUILDS, REPO, background_build, clone_project, run, tracked_files

SRC = REPO / "src"
PACKAGE = "rrlfeh"
STAGES = ("acquire", "validate", "preprocess", "tune", "crossval", "reference", "train", "register",
          "score", "sparse", "report")

# Code a stage runs that no import statement of its own names:
# - tune.code_digest() reads every rrlfeh/training/*.py as bytes (crossval and reference call
#   it too), so those stages must depend on the whole folder;
# - score and sparse unpickle the registered champion, and mlflow then imports
#   rrlfeh.serving.pyfunc.
READ_AS_FILES = {"tune": ["src/rrlfeh/training"], "crossval": ["src/rrlfeh/training"],
                 "reference": ["src/rrlfeh/training"]}
LOADED_BY_NAME = {"score": {"rrlfeh.serving.pyfunc"}, "sparse": {"rrlfeh.serving.pyfunc"}}

# Input files named by params, by the stage that reads them. The optional ones are null by
# default (a null cannot be templated into a DVC dep); set to a path, they must be deps too.
INPUT_KEYS = {"acquire": ["acquire.files.epochs", "acquire.files.labels", "acquire.files.stars"],
              "preprocess": ["preprocess.folded.curves", "preprocess.folded.labels",
                             "preprocess.folded.periods"],
              "register": ["preprocess.folded.curves"], "score": ["preprocess.folded.curves"],
              "sparse": ["acquire.files.epochs"], "report": ["acquire.files.epochs"]}


# --------------------------------------------------------------------------------------------
# the import closure, by ast


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The file under `src` of a dotted module name of the package (a package: __init__.py)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = src.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def imported_modules(nodes: list[ast.AST], current: str, is_package: bool,
                     src: Path = SRC) -> set[str]:
    """The package's modules imported anywhere inside `nodes`, with their parent packages
    (importing a.b.c runs a/__init__, a/b/__init__ and a/b/c)."""
    found: set[str] = set()
    for tree in nodes:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = current.split(".")[:None if is_package else -1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join([*pkg, *([node.module] if node.module else [])])
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                             if module_file(".".join(parts[:i]), src) is not None)
    return found


def module_closure(start: set[str], src: Path = SRC) -> set[str]:
    """Every module reached from `start` through imports (module level and inside functions)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, src)
        tree = ast.parse(path.read_text(), filename=str(path))
        todo.extend(imported_modules([tree], name, path.name == "__init__.py", src) - seen)
    return seen


def _branch_for(test: ast.expr, stage: str) -> bool | None:
    """`args.stage in (...)` or `args.stage == "..."`: whether it holds for `stage`; None for
    any other test."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.left, ast.Attribute) and test.left.attr == "stage"):
        return None
    right = test.comparators[0]
    if isinstance(test.ops[0], ast.In) and isinstance(right, (ast.Tuple, ast.List, ast.Set)):
        return stage in [e.value for e in right.elts if isinstance(e, ast.Constant)]
    if isinstance(test.ops[0], ast.Eq) and isinstance(right, ast.Constant):
        return right.value == stage
    return None


def _as_run_for(body: list[ast.stmt], stage: str) -> list[ast.stmt]:
    """`body` with each `if args.stage ...` replaced by the branch that runs for `stage`."""
    out: list[ast.stmt] = []
    for node in body:
        taken = _branch_for(node.test, stage) if isinstance(node, ast.If) else None
        if taken is None:
            out.append(node)
        else:
            out.extend(_as_run_for(node.body if taken else node.orelse, stage))
    return out


def cli_imports(stage: str, src: Path = SRC) -> set[str]:
    """Modules `rrlfeh <stage>` imports through cli.py: its module-level imports, the handler
    `_<stage>` and the cli functions that calls, and `main` as it runs for `stage`."""
    path = src / PACKAGE / "cli.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    nodes: list[ast.AST] = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    nodes.extend(_as_run_for(funcs["main"].body, stage))
    todo, done = [f"_{stage}"], set()
    while todo:
        name = todo.pop()
        if name not in done:
            done.add(name)
            nodes.append(funcs[name])
            todo.extend(n.func.id for n in ast.walk(funcs[name]) if isinstance(n, ast.Call)
                        and isinstance(n.func, ast.Name) and n.func.id in funcs)
    return imported_modules(nodes, f"{PACKAGE}.cli", False, src) - {f"{PACKAGE}.cli"}


def stage_code(stage: str, src: Path = SRC) -> set[Path]:
    """Every source file of the package that `rrlfeh <stage>` runs (cli.py itself, but not the
    modules only other stages' handlers import)."""
    start = (cli_imports(stage, src) | {f"{PACKAGE}.stages.{stage}"}
             | LOADED_BY_NAME.get(stage, set()))
    return {src / PACKAGE / "cli.py"} | {module_file(m, src) for m in module_closure(start, src)}


# --------------------------------------------------------------------------------------------
# dvc.yaml


def dvc_stages(root: Path = REPO) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def dep_paths(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def covered(rel: str, deps: list[str]) -> bool:
    """Whether a dep names the file `rel`, or a folder above it."""
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


def uncovered_code(stage: str, deps: list[str], src: Path = SRC) -> list[str]:
    code = (f"src/{p.relative_to(src).as_posix()}" for p in stage_code(stage, src))
    return sorted(rel for rel in code if not covered(rel, deps))


def test_every_stage_is_analysed():
    stages = dvc_stages()
    assert tuple(stages) == STAGES
    for stage in STAGES:
        assert stages[stage]["cmd"] == f"rrlfeh {stage}"
        assert (SRC / PACKAGE / "stages" / f"{stage}.py").is_file()


@pytest.mark.parametrize("stage", STAGES)
def test_deps_cover_the_code_the_stage_runs(stage: str):
    deps = dep_paths(dvc_stages()[stage])
    assert not uncovered_code(stage, deps), f"stage {stage}: code not in its deps"
    for folder in READ_AS_FILES.get(stage, []):
        assert folder in deps, f"stage {stage} reads every file of {folder}: list the folder"


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_code_the_stage_runs(stage: str):
    """The other way round: a code dep the stage never runs reruns it for nothing (a folder is
    right when the stage runs some of its modules)."""
    code = [f"src/{p.relative_to(SRC).as_posix()}" for p in stage_code(stage)]
    for dep in dep_paths(dvc_stages()[stage]):
        if dep.startswith("src/") and dep not in READ_AS_FILES.get(stage, []):
            assert any(covered(rel, [dep]) for rel in code), f"stage {stage}: {dep} is not run"


def test_the_closure_follows_lazy_imports_and_the_stage_branches_of_main():
    rel = {s: {p.relative_to(SRC).as_posix() for p in stage_code(s)} for s in STAGES}
    # acquire imports the synthetic generator and the Gaia reader inside functions
    assert {"rrlfeh/cli.py", "rrlfeh/config.py", "rrlfeh/io.py", "rrlfeh/reasons.py",
            "rrlfeh/data/schema.py", "rrlfeh/data/layouts.py", "rrlfeh/data/synthetic.py",
            "rrlfeh/data/gaia.py", "rrlfeh/lightcurve/derive.py"} <= rel["acquire"]
    assert "rrlfeh/data/dg22.py" in rel["preprocess"]  # from_folded's lazy import
    # main imports training.runner only for the training and serving stages
    assert "rrlfeh/training/runner.py" not in rel["acquire"] | rel["validate"] | rel["preprocess"]
    assert all("rrlfeh/training/runner.py" in rel[s] for s in STAGES[3:])
    # and the other handlers' stage modules are not part of a stage
    assert "rrlfeh/stages/tune.py" not in rel["acquire"] and "rrlfeh/stages/tune.py" in rel[
        "crossval"]


def test_a_new_import_fails_the_check(tmp_path: Path):
    """An import added inside a function of a stage module is code the stage's deps miss."""
    src = tmp_path / "src"
    shutil.copytree(SRC / PACKAGE, src / PACKAGE)
    deps = dep_paths(dvc_stages()["validate"])
    assert not uncovered_code("validate", deps, src)
    module = src / PACKAGE / "stages" / "validate.py"
    module.write_text(module.read_text() + "\n\ndef _later():\n    from rrlfeh import weights\n")
    assert uncovered_code("validate", deps, src) == ["src/rrlfeh/weights.py"]


def _get(params: dict, dotted: str):
    for key in dotted.split("."):
        params = params[key]
    return params


@pytest.mark.parametrize("stage", list(INPUT_KEYS))
def test_input_files_named_by_params_are_deps(stage: str):
    """Each input path in params.yaml is a templated dep of the stage that reads it, and its
    default exists in every clone (a missing dep fails `dvc repro`, also of the synthetic
    default); an optional input left null is read by no stage."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    deps = dep_paths(dvc_stages()[stage])
    tracked = set(tracked_files())
    for key in INPUT_KEYS[stage]:
        value = _get(params, key)
        if value is None:
            assert f"${{{key}}}" not in deps
            continue
        assert f"${{{key}}}" in deps, f"stage {stage} reads {key} but it is not a dep"
        assert value in tracked, f"{key}: {value} is not a file of the repository"


# --------------------------------------------------------------------------------------------
# a changed input file reruns exactly the stages it reaches (real dvc, a copy of the project)


@background_build("files_project")
def _files_project(work: Path) -> list[str]:
    from rrlfeh.data.synthetic import generate

    sample = generate(60, seed=3)

    def local_files(params: dict) -> None:
        params["acquire"]["source"] = "files"
        params["acquire"]["files"].update(epochs="inputs/epochs.parquet",
                                          labels="inputs/labels.csv")
        params["acquire"]["derive"]["n_jobs"] = 1
        params["validate"].update(min_epochs=20, max_phi31_error=0.3)

    (work / "inputs").mkdir()
    individual_layout(sample.epochs).to_parquet(work / "inputs/epochs.parquet")
    sample.labels.to_csv(work / "inputs/labels.csv", index=False)
    clone_project(work, local_files)
    return ["dvc", "repro", "preprocess"]


@pytest.fixture(scope="module")
def files_project() -> Path:
    """A clone-like copy of the working tree whose `acquire` reads local files (epochs and
    labels of a small synthetic sample under inputs/), with the data stages reproduced (in the
    background: conftest)."""
    work = BUILDS["files_project"].wait()
    assert ran_in((work / "repro.log").read_text()) == ["acquire", "validate", "preprocess"]
    return work


def ran_in(text: str) -> list[str]:
    """The stages a `dvc repro` ran, in order, from its output."""
    return re.findall(r"Running stage '([^']+)'", text)


def ran(res) -> list[str]:
    """The stages a `dvc repro` ran, in order."""
    return ran_in(res.stdout)


def changed(work: Path) -> dict[str, str]:
    """`dvc status` of the data stages: {stage: what it says changed}."""
    out = run(["dvc", "status", "--json", "preprocess", "--with-deps"], work).stdout
    return {name: str(what) for name, what in yaml.safe_load(out).items()}


def edit_label(work: Path, pick) -> int:
    """Change the [Fe/H] of the first label row `pick(labels, kept ids)` selects; its id."""
    path = work / "inputs/labels.csv"
    labels = pd.read_csv(path)
    kept = pd.read_parquet(work / "data/validated/stars.parquet")["source_id"]
    i = labels.index[pick(labels, kept)][0]
    labels.loc[i, "feh"] += 0.05
    labels.to_csv(path, index=False)
    return int(labels.loc[i, "source_id"])


@pytest.mark.slow
def test_unchanged_inputs_rerun_nothing(files_project: Path):
    assert changed(files_project) == {}
    assert ran(run(["dvc", "repro", "preprocess"], files_project)) == []


@pytest.mark.slow
def test_a_changed_label_of_a_rejected_star_stops_at_validate(files_project: Path):
    """acquire reads the label file, so it reruns; data/raw/labels.parquet changes, so validate
    reruns; the star is not among the kept ones, so data/validated/stars.parquet is the same and
    preprocess does not rerun."""
    kept_before = pd.read_parquet(files_project / "data/validated/stars.parquet")
    edit_label(files_project, lambda labels, kept: ~labels["source_id"].isin(kept))
    status = changed(files_project)
    assert list(status) == ["acquire"] and "inputs/labels.csv" in status["acquire"]
    assert ran(run(["dvc", "repro", "preprocess"], files_project)) == ["acquire", "validate"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(files_project / "data/validated/stars.parquet"), kept_before)
    assert changed(files_project) == {}


@pytest.mark.slow
def test_a_changed_label_of_a_kept_star_reruns_the_data_stages(files_project: Path):
    """The same edit on a star `validate` keeps changes its [Fe/H] in the validated stars,
    so preprocess reruns too; its training arrays hold the new label."""
    sid = edit_label(files_project, lambda labels, kept: labels["source_id"].isin(kept))
    assert list(changed(files_project)) == ["acquire"]
    assert ran(run(["dvc", "repro", "preprocess"], files_project)) == [
        "acquire", "validate", "preprocess"]
    feh = pd.read_csv(files_project / "inputs/labels.csv").set_index("source_id")["feh"][sid]
    arrays = [np.load(files_project / f"data/processed/{k}.npz") for k in ("RRab", "RRc")]
    got = np.concatenate([a["y"][a["source_id"] == sid] for a in arrays])
    own = np.concatenate([a["copy"][a["source_id"] == sid] == 0 for a in arrays])
    assert own.sum() == 1  # the star's own curve, and its sparse copies with the same label
    assert got == pytest.approx(np.full(len(got), feh), abs=1e-6)
    assert changed(files_project) == {}
    assert ran(run(["dvc", "repro", "preprocess"], files_project)) == []
