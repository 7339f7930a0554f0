"""Stage `sparse`: the champion on curves cut to a few epochs (paper Fig. 7 extended).

The test-split stars of `preprocess` with at least `sparse.min_epochs` clean G epochs are cut
to N of them (`sparse.n_epochs`, `sparse.n_draws` seeded draws each; rrlfeh.sparse) and kept in
full, and every subset is scored in two modes: with the star's catalogue period, epoch of
maximum and type, and without them (the model derives them; with `sparse.bands` also the BP and
RP epochs of the chosen transits, where the served model takes a `band` column). Pre-folded
curves (`preprocess.source` folded, e.g. DG22) are cut to N of their folded points and sent in
the folded form, with the period preprocess gave the star's full curve or without it. Three
models:

- the champion, loaded as `rrlfeh score` loads it and called through its own predict (the one
  scoring path), a chunk of `sparse.chunk_subsets` subsets at a time;
- the line [Fe/H] = a + b·P + c·φ31 fitted on the training stars, at the φ31 of each subset's
  own Fourier fit, at the given period or at the one the champion derived;
- the paper's GRU (stage `reference`'s fold models) through the same
  `rrlfeh.serving.pipeline.score_request`, with the champion's settings.

A subset a model cannot score counts against its share. Finished chunks are kept in
`sparse.cache_dir`, so a killed run resumes. Writes <out_dir>/predictions.parquet (every
subset, mode and model), the metrics (reports/sparse.json) and
<figures_dir>/sparse_error_vs_epochs.png.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import write_json, write_parquet
from rrlfeh.sparse import FULL, MODES, cut_labels
from rrlfeh.sparse_requests import read_bands, request

log = logging.getLogger(__name__)

FIGURE = "sparse_error_vs_epochs.png"
PREDICTIONS = "predictions.parquet"


@dataclass(frozen=True)
class Settings:
    """params.yaml `sparse`: which stars, how they are cut, where the results go."""

    min_epochs: int
    n_epochs: tuple[int, ...]
    n_draws: int
    seed: int
    bands: bool
    paper_gru_modes: tuple[str, ...]
    chunk_subsets: int
    out_dir: str
    figures_dir: str
    cache_dir: str

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> Settings:
        """The section's values with their types (ConfigError naming a missing key)."""
        from rrlfeh.config import ConfigError

        missing = [f.name for f in fields(cls) if f.name not in p]
        if missing:
            raise ConfigError(f"params.yaml: sparse lacks {', '.join(missing)}")
        modes = tuple(str(m) for m in p["paper_gru_modes"])
        if not set(modes) <= set(MODES):
            raise ConfigError(f"sparse.paper_gru_modes must be among {list(MODES)}, got "
                              f"{list(modes)}")
        return cls(min_epochs=int(p["min_epochs"]), n_epochs=tuple(int(n) for n in p["n_epochs"]),
                   n_draws=int(p["n_draws"]), seed=int(p["seed"]), bands=bool(p["bands"]),
                   paper_gru_modes=modes,
                   chunk_subsets=max(1, int(p["chunk_subsets"])), out_dir=str(p["out_dir"]),
                   figures_dir=str(p["figures_dir"]), cache_dir=str(p["cache_dir"]))


def npz_rows(path: Path, part: str) -> dict[str, np.ndarray]:
    """source_id, y, period, star_phi31 of the test (`part` 'test') or training stars of a
    type's arrays, original curves only (`copy` == 0 where the file has augmented copies)."""
    with np.load(path) as d:
        keep = d["is_test"].astype(bool) if part == "test" else ~d["is_test"].astype(bool)
        if "copy" in d.files:
            keep &= d["copy"] == 0
        return {k: d[k][keep] for k in ("source_id", "y", "period", "star_phi31")}


def test_stars(processed_dir: Path) -> pd.DataFrame:
    """source_id, type, label of every test star (the type of the file that holds it) and the
    period preprocess gave its curve."""
    parts = []
    for kind in schema.TYPES:
        path = processed_dir / f"{kind}.npz"
        if path.exists():
            d = npz_rows(path, "test")
            parts.append(pd.DataFrame({"source_id": d["source_id"].astype(np.int64),
                                       "type": kind, "label": d["y"].astype(float),
                                       "period": d["period"].astype(float)}))
    if not parts:
        raise FileNotFoundError(f"{processed_dir}: no <type>.npz (run `rrlfeh preprocess`)")
    return pd.concat(parts, ignore_index=True)


def line_coefficients(processed_dir: Path) -> dict[str, np.ndarray]:
    """(a, b, c) of the P-φ31 line per type, fitted on the training stars' full curves."""
    from rrlfeh.sparse import fit_line

    out = {}
    for kind in schema.TYPES:
        path = processed_dir / f"{kind}.npz"
        if not path.exists():
            continue
        d = npz_rows(path, "train")
        try:
            out[kind] = fit_line(d["period"], d["star_phi31"], d["y"])
        except ValueError as exc:
            log.warning("sparse: no %s line (%s)", kind, exc)
    return out


def bands_refused(model: Any) -> str | None:
    """Why the champion cannot take BP/RP rows (None when it can): the serving input needs a
    `bands` field and the registered signature a `band` column (else MLflow drops the column
    and BP/RP rows would be read as G epochs)."""
    from rrlfeh.serving.inputs import Request

    if "bands" not in {f.name for f in fields(Request)}:
        return "rrlfeh.serving.inputs.Request has no bands field"
    schema_in = model.metadata.get_input_schema()
    if schema_in is None or "band" not in schema_in.input_names():
        return "the champion's signature has no `band` column (registered before bands)"
    return None


def chunked(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """`frame` (sorted by source_id) in chunks of `n` whole request stars."""
    ids = pd.unique(frame["source_id"])
    starts = np.searchsorted(frame["source_id"].to_numpy(), ids[::n])
    return [frame.iloc[a:b] for a, b in zip(starts, [*starts[1:], len(frame)], strict=True)]


def cached_chunks(frame: pd.DataFrame, n: int, score: Callable[[pd.DataFrame], pd.DataFrame],
                  cache: Path, tag: str) -> pd.DataFrame:
    """`score` of every chunk of `frame`, each kept in `cache` (<tag>_<i>.parquet) and read
    back from there on a rerun."""
    parts = []
    chunks = chunked(frame, n)
    for i, chunk in enumerate(chunks):
        path = cache / f"{tag}_{i:05d}.parquet"
        if not path.exists():
            t0 = time.perf_counter()
            write_parquet(score(chunk), path)
            log.info("sparse: %s chunk %d/%d, %d subsets in %.1f s", tag, i + 1, len(chunks),
                     chunk["source_id"].nunique(), time.perf_counter() - t0)
        parts.append(pd.read_parquet(path))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def long_rows(subsets: pd.DataFrame, out: pd.DataFrame, mode: str, model: str) -> pd.DataFrame:
    """One row a subset of a model's output (source_id = subset_id): the subset, its star's
    label and type, feh, feh_std, the period used and the status (a subset absent from `out`
    is 'not returned', unscored)."""
    got = out.set_index("source_id").reindex(subsets["subset_id"].to_numpy())
    status = got["status"].astype(object).where(got["status"].notna(), "not returned")
    feh = got["feh"].to_numpy(float)
    return subsets.assign(
        mode=mode, model=model, feh=np.where(status == "ok", feh, np.nan),
        feh_std=got["feh_std"].to_numpy(float) if "feh_std" in got else np.nan,
        period=got["period"].to_numpy(float), status=status.astype(str).to_numpy())


def subset_phi31(chosen: pd.DataFrame, period: pd.Series,
                 knobs: Mapping[str, Any]) -> pd.Series:
    """φ31 (centred as the network and the relations take it) of each subset's own Fourier fit
    at `period` (by subset_id; NaN where the period is NaN or the fit fails). Folded points
    (`phase`, no errors) are fitted at times phase × period with the default error."""
    from rrlfeh.data.schema import mag_error
    from rrlfeh.lightcurve.features import star_features
    from rrlfeh.preprocess.network_input import centred_phi31

    out = pd.Series(np.nan, index=period.index, dtype=float)
    timed = "time" in chosen.columns
    sigma = mag_error(chosen) if timed else np.full(len(chosen), np.nan)
    with np.errstate(all="ignore"):
        for sub, idx in chosen.groupby("subset_id").indices.items():
            p = period.get(sub, np.nan)
            if not np.isfinite(p):
                continue
            e = chosen.iloc[idx]
            t = e["time"].to_numpy(float) if timed else e["phase"].to_numpy(float) * float(p)
            out[sub] = star_features(t, e["mag"].to_numpy(float), sigma[idx], float(p),
                                     **knobs)["phi31"]
    return pd.Series(centred_phi31(out.to_numpy()), index=out.index)


def line_rows(subsets: pd.DataFrame, chosen: pd.DataFrame, period: pd.Series,
              coef: Mapping[str, np.ndarray], knobs: Mapping[str, Any],
              mode: str) -> pd.DataFrame:
    """The line's [Fe/H] of each subset at `period` (by subset_id) and the φ31 of its own
    Fourier fit; unscored where the period is unknown or the fit fails."""
    from rrlfeh.sparse import line_predict

    phi31 = subset_phi31(chosen, period, knobs).reindex(subsets["subset_id"]).to_numpy()
    p = period.reindex(subsets["subset_id"]).to_numpy(float)
    feh = np.full(len(subsets), np.nan)
    for kind, c in coef.items():
        mine = (subsets["type"] == kind).to_numpy()
        feh[mine] = line_predict(c, p[mine], phi31[mine])
    status = np.where(np.isfinite(feh), "ok",
                      np.where(np.isfinite(p), "Fourier fit failed", "no period"))
    out = pd.DataFrame({"source_id": subsets["subset_id"].to_numpy(), "feh": feh,
                        "feh_std": np.nan, "period": p, "status": status})
    return long_rows(subsets, out, mode, "line")


def paper_model(reference_dir: Path, settings: Mapping[str, Any]):
    """A ScoringModel of the reference fold ensembles (each type that has one) with the
    champion's settings; None when `reference` left none."""
    from rrlfeh.serving.pipeline import ScoringModel
    from rrlfeh.training.ensemble import MANIFEST, Ensemble

    ens = {kind: Ensemble.load(reference_dir / kind) for kind in schema.TYPES
           if (reference_dir / kind / MANIFEST).exists()}
    return ScoringModel(ens, dict(settings)) if ens else None


def cache_key(files: list[Path], identity: Mapping[str, Any], root: Path) -> str:
    """The cache folder's key: the models' identity, the settings, the package's code (the
    line and the scoring path are computed here, not frozen in the model) and the input
    files' names (from `root`, so a copied project keeps its cache), sizes and dates."""
    import rrlfeh

    h = hashlib.md5(json.dumps(identity, sort_keys=True, default=str).encode())
    for module in sorted(Path(rrlfeh.__file__).parent.rglob("*.py")):
        h.update(module.read_bytes())
    for path in files:
        st = path.stat()
        name = path.relative_to(root) if path.is_relative_to(root) else path
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def reference_files(reference_dir: Path) -> list[Path]:
    """The reference ensembles' manifests (they name their fold runs): part of the cache key."""
    return sorted(reference_dir.glob("*/manifest.json"))


@dataclass
class Inputs:
    """What the stage scores: the subsets, their epochs, the stars' catalogue values."""

    subsets: pd.DataFrame
    chosen: pd.DataFrame
    stars: pd.DataFrame
    n_test: dict[str, int]


def folded_inputs(curves: Path, test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, stars) of the `test` stars' pre-folded curves: their folded points (source_id,
    phase, mag, rejected false) and the period preprocess gave each full curve (given, or from
    its scan gaps), with its type and no epoch of maximum (the phases are the curve's own)."""
    from rrlfeh.data.dg22 import read_dg22_curves

    points = read_dg22_curves(curves)
    points = points[points["source_id"].isin(test["source_id"])].assign(rejected=False)
    stars = test[["source_id", "period", "type"]].assign(epoch_max=np.nan)
    return points.reset_index(drop=True), stars


def load_inputs(raw_dir: Path, processed_dir: Path, s: Settings,
                folded: Path | None = None) -> Inputs:
    """The test stars' subsets (rrlfeh.sparse.draw_subsets) with their type and label: of their
    epochs in `raw_dir`, or of their pre-folded points in the file `folded`."""
    from rrlfeh.sparse import draw_subsets

    test = test_stars(processed_dir)
    if folded is not None:
        epochs, stars = folded_inputs(folded, test)
    else:
        epochs = pd.read_parquet(raw_dir / "epochs.parquet",
                                 filters=[("source_id", "in", test["source_id"].tolist())])
        stars = pd.read_parquet(raw_dir / "stars.parquet",
                                columns=["source_id", "period", "epoch_max", "type"])
    subsets, chosen = draw_subsets(epochs, test["source_id"], s.n_epochs, s.n_draws, s.seed,
                                   s.min_epochs)
    subsets = subsets.merge(test[["source_id", "type", "label"]], on="source_id", how="left")
    n_test = test["type"].value_counts().to_dict()
    return Inputs(subsets, chosen, stars, {k: int(v) for k, v in n_test.items()})


def stage_metrics(predictions: pd.DataFrame, inp: Inputs, s: Settings,
                  notes: Mapping[str, Any]) -> dict[str, Any]:
    """reports/sparse.json: type -> mode -> cut -> figures (rrlfeh.sparse.metrics_table), each
    type's number of test stars, and `settings` (the cuts, the figure's path, `notes`)."""
    from rrlfeh.sparse import metrics_table

    metrics: dict[str, Any] = metrics_table(predictions, cut_labels(s.n_epochs))
    for kind, m in metrics.items():
        m["n_test_stars"] = inp.n_test.get(kind, 0)
    metrics["settings"] = {"min_epochs": s.min_epochs, "n_draws": s.n_draws,
                           "n_epochs": list(s.n_epochs), "figure": f"{s.figures_dir}/{FIGURE}",
                           **notes}
    return metrics


def run(params: Mapping[str, Any], root: Path, metrics_path: Path) -> dict[str, Any]:
    """Cut, score and compare; write the predictions, the metrics and the figure."""
    from rrlfeh import config
    from rrlfeh.lightcurve.features import fit_knobs
    from rrlfeh.serving.model_uri import load
    from rrlfeh.sparse_plots import error_vs_epochs
    from rrlfeh.training.tracking import TrackingSettings, setup_tracking

    s = Settings.from_params(config.section(params, "sparse"))
    acq = config.acquire_params(params, root)
    processed = root / config.section(params, "preprocess").get("out_dir", "data/processed")
    reference_dir = root / config.section(params, "reference").get("out_dir", "models/reference")
    derive = dict(config.section(params, "acquire").get("derive", {}))
    n_jobs = int(derive.get("n_jobs", 1))
    folded = folded_curves(config.section(params, "preprocess"), root)
    t0 = time.perf_counter()
    inp = load_inputs(acq.out_dir, processed, s, folded)
    log.info("sparse: %d subsets of %d test stars with >= %d clean epochs (of %s test stars)",
             len(inp.subsets), inp.subsets["source_id"].nunique(), s.min_epochs,
             ", ".join(f"{v} {k}" for k, v in sorted(inp.n_test.items())))
    setup_tracking(TrackingSettings.from_params(config.section(params, "tracking"), root))
    uri = str(config.section(params, "score")["model_uri"])
    champion, resolved = load(uri)
    version = resolved.version
    log.info("sparse: champion %s", resolved.describe())
    settings = champion.unwrap_python_model().model.settings
    bands, bands_note = ((None, "none (folded curves)") if folded is not None
                         else _bands(s, acq, champion, inp))
    files = [*([folded] if folded is not None else
               [acq.out_dir / "epochs.parquet", acq.out_dir / "stars.parquet"]),
             *sorted(processed.glob("*.npz")), *reference_files(reference_dir)]
    key = cache_key(files, {"uri": uri, "version": version,
                            "uuid": champion.metadata.model_uuid, "sparse": asdict(s),
                            "derive": derive, "bands": bands is not None}, root)
    cache = root / s.cache_dir / key
    cache.mkdir(parents=True, exist_ok=True)
    paper = paper_model(reference_dir, settings)
    coef = line_coefficients(processed)
    rows = []
    if len(inp.subsets) == 0:
        log.warning("sparse: no test star has %d clean epochs in %s: nothing to cut",
                    s.min_epochs, acq.out_dir / "epochs.parquet")
    for mode in MODES if len(inp.subsets) else ():
        rows += score_mode(mode, inp, champion, paper, coef, fit_knobs(derive), cache, s,
                           n_jobs, bands if mode == "without_period" else None)
    predictions = pd.concat(rows, ignore_index=True) if rows else long_rows(
        inp.subsets, pd.DataFrame(columns=["source_id", "feh", "period", "status"]), MODES[0],
        "champion")
    out_path = write_parquet(predictions, root / s.out_dir / PREDICTIONS)
    cuts = cut_labels(s.n_epochs)
    metrics = stage_metrics(predictions, inp, s, {
        "model_uri": uri, "model_version": version, "bands": bands_note,
        "source": "folded" if folded is not None else "raw",
        "paper_gru_modes": list(s.paper_gru_modes) if paper else [],
        "seconds": round(time.perf_counter() - t0, 1)})
    error_vs_epochs(metrics, cuts, root / s.figures_dir / FIGURE)
    write_json(metrics, metrics_path)
    _log_summary(metrics, cuts)
    log.info("sparse: %s, %s in %.0f s", out_path.relative_to(root) if out_path.is_relative_to(
        root) else out_path, metrics_path, time.perf_counter() - t0)
    return metrics


def score_mode(mode: str, inp: Inputs, champion: Any, paper: Any,
               coef: Mapping[str, np.ndarray], knobs: Mapping[str, Any], cache: Path,
               s: Settings, n_jobs: int, bands: pd.DataFrame | None) -> list[pd.DataFrame]:
    """The champion's, the line's and the paper GRU's rows of every subset in one mode."""
    from rrlfeh.serving.inputs import read_request
    from rrlfeh.serving.pipeline import score_request
    from rrlfeh.serving.pyfunc import predict_frame

    frame = request(inp.chosen, inp.subsets, inp.stars, mode, bands)
    log.info("sparse: %s, %d subsets, %d request rows", mode.replace("_", " "),
             len(inp.subsets), len(frame))
    out = cached_chunks(frame, s.chunk_subsets, lambda c: predict_frame(
        champion, c, {"derive_n_jobs": n_jobs}), cache, f"{mode}_champion")
    rows = [long_rows(inp.subsets, out, mode, "champion")]
    given = inp.stars.set_index("source_id")["period"].reindex(inp.subsets["source_id"])
    used = given if mode == "with_period" else rows[0]["period"]  # the champion's derived one
    period = pd.Series(used.to_numpy(float), index=inp.subsets["subset_id"])
    line = cached_chunks(inp.subsets.assign(source_id=inp.subsets["subset_id"]), s.chunk_subsets,
                         lambda c: line_rows(inp.subsets[inp.subsets["subset_id"].isin(
                             c["subset_id"])], inp.chosen, period, coef, knobs, mode),
                         cache, f"{mode}_line")
    rows.append(line)
    if paper is not None and mode in s.paper_gru_modes:
        kinds = inp.subsets["type"].isin(list(paper.ensembles)).to_numpy()
        ids = inp.subsets["subset_id"].to_numpy()[kinds]
        mine = frame[frame["source_id"].isin(ids)]
        got = cached_chunks(mine, s.chunk_subsets, lambda c: score_request(
            read_request(c), paper, derive_n_jobs=n_jobs), cache, f"{mode}_paper_gru")
        rows.append(long_rows(inp.subsets[kinds], got, mode, "paper_gru"))
    return rows


def folded_curves(pre: Mapping[str, Any], root: Path) -> Path | None:
    """The pre-folded curves file the test stars came from (`preprocess.source` folded), or
    None for epochs in time (data/raw)."""
    if pre.get("source", "raw") != "folded":
        return None
    return root / str(pre["folded"]["curves"])


def _bands(s: Settings, acq: Any, champion: Any,
           inp: Inputs) -> tuple[pd.DataFrame | None, str]:
    """(BP/RP epochs of the stars, or None; what was done with them, in words)."""
    if not s.bands:
        return None, "off (sparse.bands false)"
    if acq.source != "files" or acq.files is None:
        return None, f"not sent: acquire.source {acq.source} has no BP/RP epochs"
    refused = bands_refused(champion)
    if refused:
        log.warning("sparse: BP/RP epochs not sent: %s", refused)
        return None, f"not sent: {refused}"
    bands = read_bands(acq.files.epochs, inp.subsets["source_id"].unique())
    if bands.empty:
        return None, f"not sent: no BP/RP epochs of these stars in {acq.files.epochs.name}"
    log.info("sparse: %d BP/RP epochs of the chosen stars (without-period requests)", len(bands))
    return bands, "sent without period"


def _log_summary(metrics: Mapping[str, Any], cuts: list[str]) -> None:
    """One line per type and mode: RMSE and share of each model at each cut."""
    for kind, m in metrics.items():
        for mode in MODES:
            if not isinstance(m, Mapping) or mode not in m:
                continue
            parts = []
            for cut in cuts:
                c = m[mode].get(cut)
                if c is None:
                    continue
                shown = [f"{name} {_num(c[name]['rmse'])} ({100 * c[name]['share']:.0f} %)"
                         for name in ("champion", "line", "paper_gru") if name in c]
                parts.append(f"N={cut if cut != FULL else 'all'}: " + ", ".join(shown))
            log.info("sparse %s %s, RMSE (share scored): %s", kind, mode.replace("_", " "),
                     "; ".join(parts))


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
