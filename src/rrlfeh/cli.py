"""`rrlfeh <stage>`: the one entry point that dvc.yaml and MLproject call."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rrlfeh import config
from rrlfeh.logs import configure_logging


def _acquire(args: argparse.Namespace) -> None:
    from rrlfeh.stages import acquire

    params = config.load_params(args.params)
    p = config.acquire_params(params, Path(args.params).resolve().parent)
    acquire.run(p, Path(args.metrics))


def _validate(args: argparse.Namespace) -> None:
    from rrlfeh.stages import validate

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    p = config.acquire_params(params, root)
    validate.run(p.out_dir, config.section(params, "validate"), root, Path(args.metrics))


def _preprocess(args: argparse.Namespace) -> None:
    from rrlfeh.lightcurve.features import fit_knobs
    from rrlfeh.stages import preprocess

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    raw = config.acquire_params(params, root).out_dir
    validated = root / config.section(params, "validate").get("out_dir", "data/validated")
    preprocess.run(raw, validated / "stars.parquet", config.section(params, "preprocess"), root,
                   Path(args.metrics),
                   fourier=fit_knobs(config.section(params, "acquire").get("derive", {})))


def _processed(params: dict, root: Path) -> Path:
    return root / config.section(params, "preprocess").get("out_dir", "data/processed")


def _tune(args: argparse.Namespace) -> None:
    from rrlfeh.stages import tune

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    tune.run(_processed(params, root), params, root, Path(args.metrics))


def _crossval(args: argparse.Namespace) -> None:
    from rrlfeh.stages import crossval

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    hparams = root / config.section(params, "tune")["out"]
    crossval.run(_processed(params, root), hparams, params, root, Path(args.metrics))


def _reference(args: argparse.Namespace) -> None:
    from rrlfeh.stages import reference

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    cv_dir = root / config.section(params, "crossval")["out_dir"]
    reference.run(_processed(params, root), cv_dir, params, root, Path(args.metrics))


def _train(args: argparse.Namespace) -> None:
    from rrlfeh.stages import train

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    cv_dir = root / config.section(params, "crossval")["out_dir"]
    train.run(cv_dir, _processed(params, root), params, root, Path(args.metrics))


def _register(args: argparse.Namespace) -> None:
    from rrlfeh.stages import register

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    final = root / config.section(params, "train")["out_dir"]
    raw = config.acquire_params(params, root).out_dir
    register.run(final, _processed(params, root), raw, params, root, Path(args.metrics))


def _score(args: argparse.Namespace) -> None:
    from rrlfeh.stages import score

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    raw = Path(args.raw).resolve() if args.raw else config.acquire_params(params, root).out_dir
    pre = config.section(params, "preprocess")
    p = dict(config.section(params, "score"))
    metrics = Path(args.metrics)
    if args.out:  # the catalogue, its figures and (unless --metrics) the metrics in --out
        out = Path(args.out).resolve()
        p.update(out_dir=str(out), figures_dir=str(out / "figures"))
        metrics = out / "score.json" if args.metrics == STAGES["score"][1] else metrics
    score.run(raw, p, config.section(params, "tracking"), root, metrics,
              folded=(pre["folded"] if pre.get("source") == "folded" and not args.raw
                      else None), engine=args.engine)


def _synth_raw(args: argparse.Namespace) -> None:
    from rrlfeh.data.synthetic_raw import RawSpec, write_raw_parts

    info = write_raw_parts(Path(args.out), RawSpec(n_stars=args.stars, seed=args.seed,
                                                   part_stars=args.part_stars), jobs=args.jobs)
    print(f"{args.out}: {info['spec']['n_stars']:,} stars, {info['n_epoch_rows']:,} transits "
          f"in {info['n_parts']} part(s) (epochs/), stars.parquet")


def _sparse(args: argparse.Namespace) -> None:
    from rrlfeh.stages import sparse

    params = config.load_params(args.params)
    sparse.run(params, Path(args.params).resolve().parent, Path(args.metrics))


def _report(args: argparse.Namespace) -> None:
    from rrlfeh.stages import report

    params = config.load_params(args.params)
    report.run(params, Path(args.params).resolve().parent, Path(args.metrics))


def _summary(args: argparse.Namespace) -> None:
    from rrlfeh.stages import summary

    params = config.load_params(args.params)
    print(summary.render(Path(args.params).resolve().parent, params))


def _compare(args: argparse.Namespace) -> None:
    import shutil
    import sys

    from rrlfeh.compare import show

    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    print(show(Path(args.params).resolve().parent, dvc))


def _ui(args: argparse.Namespace) -> None:
    from rrlfeh import ui

    params = config.load_params(args.params)
    ui.run(config.section(params, "tracking"), Path(args.params).resolve().parent,
           port=args.port, workers=args.workers, serve=not args.no_serve)


def _predict(args: argparse.Namespace) -> None:
    from rrlfeh.serving import predict

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    score = config.section(params, "score")
    predict.run(Path(args.input), Path(args.output), args.model or score["model_uri"],
                config.section(params, "tracking"), root, chunk_stars=args.chunk_stars,
                n_jobs=args.jobs, threads=int(score.get("threads", 1)),
                processes=int(score.get("processes", 1)))


STAGES = {
    "acquire": (_acquire, "reports/acquire.json",
                "fetch or generate data/raw (stars, epochs, labels)"),
    "validate": (_validate, "reports/validate.json",
                 "Great Expectations quality cuts -> data/validated (kept, rejected)"),
    "preprocess": (_preprocess, "reports/preprocess.json",
                   "fold, smooth, resample, standardise, weights -> data/processed/<type>.npz"),
    "tune": (_tune, "reports/tune.json",
             "Hyperband search per type (MLflow run per trial) -> models/best_hparams.json"),
    "crossval": (_crossval, "reports/crossval.json",
                 "repeated stratified K-fold (MLflow run per fold) -> models/crossval"),
    "reference": (_reference, "reports/reference.json",
                  "the paper's GRU (2 channels, no skip) on crossval's folds -> models/reference"),
    "train": (_train, "reports/train.json",
              "final model per type: the K-fold ensemble -> models/final"),
    "register": (_register, "reports/register.json",
                 "the ensembles as the pyfunc model rrl-feh in the MLflow registry; champion gate"),
    "score": (_score, "reports/score.json",
              "every star of data/raw by models:/rrl-feh@champion -> data/scored/catalogue"),
    "sparse": (_sparse, "reports/sparse.json",
               "test stars cut to few epochs, with and without period: champion, P-phi31 line "
               "and paper's GRU -> reports/sparse.json"),
    "report": (_report, "reports/report.json",
               "Table 1, baselines on the same stars, coverage, error vs epochs -> Markdown"),
}


def build_parser() -> argparse.ArgumentParser:
    """One sub-command a stage, each with --params and --metrics."""
    parser = argparse.ArgumentParser(prog="rrlfeh", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (func, metrics, helptext) in STAGES.items():
        sp = sub.add_parser(name, help=helptext, description=f"rrlfeh {name}: {helptext}")
        sp.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
        sp.add_argument("--metrics", default=metrics, help=f"metrics JSON (default {metrics})")
        sp.set_defaults(func=func)
    sub.choices["score"].add_argument(
        "--engine", choices=["local", "spark"], default=None,
        help="local: in this process; spark: mlflow spark_udf on Spark, score.spark "
             "(default score.engine)")
    sub.choices["score"].add_argument(
        "--raw", default=None, metavar="DIR",
        help="score this folder instead of acquire.out_dir: stars.parquet (period, epoch_max, "
             "type a star) and the epochs as epochs.parquet or a folder epochs/ of parquet "
             "parts, in the canonical or Gaia's RAW layout (e.g. `rrlfeh synth-raw`); "
             "rejected.parquet optional")
    sub.choices["score"].add_argument(
        "--out", default=None, metavar="DIR",
        help="write catalogue.{parquet,csv}, figures/ and (unless --metrics) score.json here "
             "instead of score.out_dir, score.figures_dir, reports/score.json")
    what = ("synthetic RR Lyrae epoch photometry in Gaia's RAW layout (G, BP, RP), written in "
            "parquet parts: a Gaia-DR3-sized input for `rrlfeh score --raw`")
    sp = sub.add_parser("synth-raw", help=what, description=f"rrlfeh synth-raw: {what}")
    sp.add_argument("--stars", type=int, default=270_000,
                    help="stars (default 270,000: the RR Lyrae of Gaia DR3)")
    sp.add_argument("--out", required=True, metavar="DIR",
                    help="folder: epochs/part-*.parquet, stars.parquet, manifest.json (a "
                         "stopped run resumes in it)")
    sp.add_argument("--seed", type=int, default=42, help="seed (default 42)")
    sp.add_argument("--part-stars", type=int, default=10_000,
                    help="stars a part (default 10,000; bounds the memory while writing)")
    sp.add_argument("--jobs", type=int, default=1, help="processes writing parts (default 1)")
    sp.set_defaults(func=_synth_raw)
    what = "score a file of light curves with the registered model"
    sp = sub.add_parser("predict", help=what, description=f"rrlfeh predict: {what}")
    sp.add_argument("input", help="epochs: CSV, parquet or VOTable; Gaia INDIVIDUAL or RAW layout, "
                                  "the long form (source_id, time, mag, ...) or folded curves")
    sp.add_argument("-o", "--output", required=True, help="result table (.csv or .parquet)")
    sp.add_argument("--model", default=None,
                    help="model URI (default: score.model_uri of the --params file, which "
                         "`dvc exp run` may have changed; models:/rrl-feh@champion as "
                         "committed). The model used is logged and written in each row")
    sp.add_argument("--params", default="params.yaml", help="params file (tracking store)")
    sp.add_argument("--chunk-stars", type=int, default=2000, help="stars scored at a time")
    sp.add_argument("--jobs", type=int, default=1,
                    help="processes for the period search of stars sent without a period")
    sp.set_defaults(func=_predict)
    what = "the headline of every run (workspace, commit, named experiments), side by side"
    sp = sub.add_parser("compare", help=what, description=f"rrlfeh compare: {what}")
    sp.add_argument("--params", default="params.yaml", help="params file (its folder: the project)")
    sp.set_defaults(func=_compare)
    what = "Table 1 per type, the classical relation, the champion"
    sp = sub.add_parser("summary", help=what, description=f"rrlfeh summary: {what}")
    sp.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    sp.set_defaults(func=_summary)
    what = ("the MLflow UI of the project's store, opened on the runs with Table 1's columns "
            "(prints the address)")
    sp = sub.add_parser("ui", help=what, description=f"rrlfeh ui: {what}")
    sp.add_argument("--params", default="params.yaml", help="params file (tracking store)")
    sp.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    sp.add_argument("--workers", type=int, default=1,
                    help="server worker processes (default 1; mlflow's own default is 4)")
    sp.add_argument("--no-serve", action="store_true",
                    help="write the view and print the address only (a server already runs)")
    sp.set_defaults(func=_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the stage; errors end with a one-line message, exit 1."""
    configure_logging()
    args = build_parser().parse_args(argv)
    if args.stage in ("tune", "crossval", "reference", "train", "register", "score",
                      "sparse", "predict"):
        from rrlfeh.training.runner import quiet_tensorflow

        quiet_tensorflow()
        # under `mlflow run`, the launcher's run id must not become every stage run (the stages
        # make their own parent and child runs; MLFLOW_TRACKING_URI is still honoured)
        os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        args.func(args)
    except (config.ConfigError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"rrlfeh {args.stage}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
