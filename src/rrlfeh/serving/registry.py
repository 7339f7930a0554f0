"""The model folder the pyfunc carries, its registration, and the champion gate.

A candidate is registered as a new version of `rrl-feh` with its cross-validated figures as tags.
The alias `champion` moves to it only when it beats the current champion on the same stars:
out-of-fold RMSE of every type no worse and of one type better, the stars (a digest of their ids
and labels per type) the same. A model identical to a registered version (same member weights and
settings) is not registered again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import write_json
from rrlfeh.serving.pipeline import SETTINGS

# what the pyfunc imports to load and score, as pip names (first installed of each alternative)
SERVING_PACKAGES: tuple[tuple[str, ...], ...] = (
    ("tensorflow-cpu", "tensorflow"), ("keras",), ("numpy",), ("pandas",), ("pyarrow",),
    ("scipy",), ("scikit-learn",), ("matplotlib",), ("rrlfeh",))


def pip_requirements() -> list[str]:
    """The serving packages pinned at their installed versions: given to MLflow so that it does
    not infer them by loading the model in a subprocess (~15 s a registration), an inference
    that also missed TensorFlow and Keras (the members load lazily)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for names in SERVING_PACKAGES:
        for name in names:
            try:
                out.append(f"{name}=={version(name)}")
                break
            except PackageNotFoundError:
                continue
    return out


def training_digest(source_id: np.ndarray, y: np.ndarray) -> str:
    """Which stars with which labels a type was trained on (stable across machines)."""
    order = np.argsort(source_id, kind="stable")
    h = hashlib.md5(np.asarray(source_id, np.int64)[order].tobytes())
    h.update(np.round(np.asarray(y, float)[order], 4).tobytes())
    return h.hexdigest()


def build_model_folder(final_dir: Path, processed_dir: Path, params: Mapping[str, Any],
                       dest: Path) -> dict[str, Any]:
    """Copy each type's ensemble into dest/ensembles and write the settings it was trained
    with (preprocess and derive knobs, the training domain, the cross-validated figures)."""
    from rrlfeh.preprocess.network_input import CHANNELS, uses_period
    from rrlfeh.training.arrays import load_training_set

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "ensembles").mkdir(parents=True)
    pre, val = dict(params["preprocess"]), dict(params["validate"])
    settings: dict[str, Any] = {
        "types": [], "preprocess": {"n_points": dict(pre["n_points"]),
                                    "curves": dict(pre.get("curves", {})),
                                    "use_mag_error": bool(pre.get("use_mag_error", False)),
                                    "scan_gaps": dict(pre.get("folded", {}).get("scan_gaps")
                                                      or {})},
        "derive": dict(params["acquire"].get("derive", {})),
        "domain": {"min_epochs": val.get("min_epochs"), "max_amplitude": val.get("max_amplitude"),
                   "period_range": {}},
        "needs_period": True, "batch_size": int(params["register"]["batch_size"]),
        "data_digest": {}, "crossval": {},
    }
    needs: list[bool] = []
    for kind in schema.TYPES:
        src = final_dir / kind
        if not (src / "manifest.json").exists():
            continue
        shutil.copytree(src, dest / "ensembles" / kind,
                        ignore=shutil.ignore_patterns("*.parquet"))
        data = load_training_set(processed_dir / f"{kind}.npz", kind)
        manifest = json.loads((src / "manifest.json").read_text())
        settings["types"].append(kind)
        needs.append(uses_period(manifest.get("channels", CHANNELS)))
        settings["domain"]["period_range"][kind] = (
            [float(data.period.min()), float(data.period.max())]
            if np.isfinite(data.period).all() else [None, None])  # no periods: no range
        if pre.get("source") == "folded":  # no validate cut: the fewest points trained on
            settings["domain"]["min_epochs"] = int(data.n_epochs.min())
        if data.is_copy.any():  # trained and validated on sparse copies down to this many
            low = int(data.n_epochs[data.is_copy].min())
            cut = settings["domain"]["min_epochs"]
            settings["domain"]["min_epochs"] = low if cut is None else min(int(cut), low)
        own = data.originals()  # the same stars, whatever the copies
        settings["data_digest"][kind] = training_digest(own.source_id, own.y)
        settings["crossval"][kind] = {"n_stars": len(data), **manifest["crossval_metrics"]}
        nll = manifest.get("error_bins", {}).get("held_out_nll")
        if nll is not None:  # how well feh_std fits held-out stars: the gate's tie-break
            settings["crossval"][kind]["feh_std_held_out_nll"] = float(nll)
    if not settings["types"]:
        raise FileNotFoundError(f"{final_dir}: no trained ensemble of any type (run `rrlfeh "
                                "train` first)")
    settings["needs_period"] = any(needs)  # False for models of curves without periods
    write_json(settings, dest / SETTINGS)
    return settings


def model_digest(folder: Path) -> str:
    """The member weights, the manifests (the served stack, the relation, the calibrated
    errors) and the settings of a model folder (not the .keras zip bytes, which carry a save
    date): equal digests, equal predictions."""
    import keras

    h = hashlib.md5((folder / SETTINGS).read_bytes())
    for manifest in sorted((folder / "ensembles").glob("*/manifest.json")):
        h.update(manifest.relative_to(folder).as_posix().encode())
        h.update(manifest.read_bytes())
    for member in sorted((folder / "ensembles").glob("*/*.keras")):
        h.update(member.relative_to(folder).as_posix().encode())
        for w in keras.models.load_model(member, compile=False).get_weights():
            h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


NLL_TIE = 1e-3  # a held-out feh_std NLL this much lower decides an RMSE tie


def _sharper_errors(candidate: Mapping[str, str], champion: Mapping[str, str],
                    kinds: list[str]) -> str:
    """Where the out-of-fold RMSEs tie: '' unless every type's held-out feh_std NLL is known on
    both sides, none worse and one lower by NLL_TIE (a calibration that fits new stars better,
    the same values); else what was lower."""
    key = "{}.feh_std_held_out_nll"
    if any(key.format(k) not in candidate or key.format(k) not in champion for k in kinds):
        return ""
    pairs = {k: (float(candidate[key.format(k)]), float(champion[key.format(k)])) for k in kinds}
    if any(c > b for c, b in pairs.values()):
        return ""
    lower = [f"{k} NLL {c:.4f} < {b:.4f}" for k, (c, b) in pairs.items() if c < b - NLL_TIE]
    return "; ".join(lower)


def candidate_tags(settings: Mapping[str, Any], digest: str) -> dict[str, str]:
    """The version's tags: per type the out-of-fold and K-fold figures and the data digest."""
    tags = {"model_digest": digest, "types": ",".join(settings["types"])}
    for kind in settings["types"]:
        cv = settings["crossval"][kind]
        tags[f"{kind}.n_stars"] = str(cv["n_stars"])
        tags[f"{kind}.data_digest"] = settings["data_digest"][kind]
        # oof_*: what is served (the stack crossval chose); network_ and relation_ beside it
        stack = cv.get("stack", {"oof": cv["oof"], "served": "network", "weight": 1.0,
                                 "reason": "no relation was compared"})
        for name in ("rmse", "r2", "mae", "wrmse"):
            tags[f"{kind}.oof_{name}"] = f"{stack['oof'][name]:.6f}"
        tags[f"{kind}.network_oof_rmse"] = f"{cv['oof']['rmse']:.6f}"
        tags[f"{kind}.served"] = stack["served"]
        tags[f"{kind}.stack_weight"] = f"{stack['weight']:.2f}"
        tags[f"{kind}.served_reason"] = stack["reason"]
        if "relation" in cv:
            tags[f"{kind}.relation_form"] = cv["relation"]["form"]
        tags[f"{kind}.val_r2_mean"] = f"{cv['val']['r2']['mean']:.6f}"
        tags[f"{kind}.val_rmse_mean"] = f"{cv['val']['rmse']['mean']:.6f}"
        if "baseline_oof" in cv:
            tags[f"{kind}.relation_oof_rmse"] = f"{cv['baseline_oof']['rmse']:.6f}"
        if "feh_std_held_out_nll" in cv:
            tags[f"{kind}.feh_std_held_out_nll"] = f"{cv['feh_std_held_out_nll']:.6f}"
    return tags


@dataclass(frozen=True)
class Decision:
    """The gate's verdict and why, with what it compared."""

    promote: bool
    reason: str
    compared: dict[str, Any]


def gate(candidate: Mapping[str, str], champion: Mapping[str, str] | None,
         champion_version: str | None, policy: str = "auto") -> Decision:
    """Promote when the candidate beats the champion on the same stars (out-of-fold RMSE per
    type); `policy` 'always' / 'never' overrides the comparison (said in the reason)."""
    if policy not in ("auto", "always", "never"):
        raise ValueError(f"register.promote must be auto, always or never, got {policy!r}")
    if policy == "never":
        return Decision(False, "not promoted: register.promote is 'never'", {})
    kinds = candidate["types"].split(",")
    behind = [f"{k} {float(candidate[f'{k}.oof_rmse']):.4f} > relation "
              f"{float(candidate[f'{k}.relation_oof_rmse']):.4f}" for k in kinds
              if f"{k}.relation_oof_rmse" in candidate
              and float(candidate[f"{k}.oof_rmse"]) > float(candidate[f"{k}.relation_oof_rmse"])]
    if behind:  # never serve what loses to the line a user can fit from the same numbers
        return Decision(False, "not promoted: out-of-fold RMSE worse than the classical relation "
                               f"on the same stars for {'; '.join(behind)}", {})
    if champion is None:
        return Decision(True, "promoted: there was no champion", {})
    if policy == "always":
        return Decision(True, f"promoted over v{champion_version}: register.promote is 'always'",
                        {})
    lost = [k for k in champion.get("types", "").split(",") if k and k not in kinds]
    if lost:
        return Decision(False, f"not promoted: the candidate has no {', '.join(lost)} model "
                               f"that champion v{champion_version} has", {})
    compared, better, worse, other = {}, [], [], []
    for k in kinds:
        if f"{k}.oof_rmse" not in champion:
            better.append(f"{k} (new type)")
            continue
        c, b = float(candidate[f"{k}.oof_rmse"]), float(champion[f"{k}.oof_rmse"])
        compared[k] = {"candidate_oof_rmse": c, "champion_oof_rmse": b,
                       "same_stars": candidate[f"{k}.data_digest"] == champion.get(
                           f"{k}.data_digest")}
        if not compared[k]["same_stars"]:
            other.append(k)
        elif c < b:
            better.append(f"{k} {c:.4f} < {b:.4f}")
        elif c > b:
            worse.append(f"{k} {c:.4f} > {b:.4f}")
    if other:
        return Decision(False, f"not promoted: champion v{champion_version} was evaluated on "
                               f"other {', '.join(other)} stars (data digest differs); compare "
                               "on the same data or set register.promote", compared)
    if worse:
        return Decision(False, "not promoted: out-of-fold RMSE worse than champion "
                               f"v{champion_version} for {'; '.join(worse)}", compared)
    if not better:
        sharper = _sharper_errors(candidate, champion, kinds)
        if sharper:
            return Decision(True, f"promoted over v{champion_version}: out-of-fold RMSE equal, "
                                  f"feh_std fits held-out stars better ({sharper})", compared)
        return Decision(False, "not promoted: out-of-fold RMSE equal to champion "
                               f"v{champion_version}", compared)
    return Decision(True, f"promoted over v{champion_version}: out-of-fold RMSE "
                          f"{'; '.join(better)} dex", compared)


def input_example(raw_dir: Path, n_stars: int = 2, types: Sequence[str] = ("RRab", "RRc"),
                  folded: tuple[Path, str] | None = None) -> pd.DataFrame:
    """A real-format request of stars of the model's `types`: the first such stars' G epochs of
    data/raw as the long form, the first with its catalogue period, epoch of maximum and type
    and the others without (derived); or, with `folded` = (curves file, type), the first curves
    of that file in the folded form."""
    import pyarrow.parquet as pq

    if folded is not None:
        from rrlfeh.data.dg22 import read_dg22_curves

        curves = read_dg22_curves(folded[0], max_stars=n_stars)
        return curves.assign(type=folded[1]).reset_index(drop=True)
    stars = pd.read_parquet(raw_dir / "stars.parquet")
    stars = stars[stars["type"].isin(list(types))].head(n_stars)
    epochs = pq.read_table(raw_dir / "epochs.parquet",
                           filters=[("source_id", "in", stars["source_id"].tolist())]).to_pandas()
    epochs = epochs.loc[~epochs["rejected"], ["source_id", "time", "mag", "flux", "flux_error"]]
    first = stars.iloc[0]
    on_first = epochs["source_id"] == first["source_id"]
    epochs.loc[on_first, "period"] = first["period"]
    epochs.loc[on_first, "epoch_max"] = first["epoch_max"]
    epochs["type"] = pd.Series(np.where(on_first, str(first["type"]), None), dtype=object,
                               index=epochs.index)
    return epochs.reset_index(drop=True)
