"""`rrlfeh <stage>`: the one entry point that dvc.yaml and MLproject call."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rrlfeh import config


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
    from rrlfeh.stages import preprocess

    params = config.load_params(args.params)
    root = Path(args.params).resolve().parent
    raw = config.acquire_params(params, root).out_dir
    validated = root / config.section(params, "validate").get("out_dir", "data/validated")
    preprocess.run(raw, validated / "stars.parquet", config.section(params, "preprocess"), root,
                   Path(args.metrics))


STAGES = {
    "acquire": (_acquire, "reports/acquire.json",
                "fetch or generate data/raw (stars, epochs, labels)"),
    "validate": (_validate, "reports/validate.json",
                 "Great Expectations quality cuts -> data/validated (kept, rejected)"),
    "preprocess": (_preprocess, "reports/preprocess.json",
                   "fold, smooth, resample, standardise, weights -> data/processed/<type>.npz"),
}


def build_parser() -> argparse.ArgumentParser:
    """One sub-command a stage, each with --params and --metrics."""
    parser = argparse.ArgumentParser(prog="rrlfeh", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (func, metrics, helptext) in STAGES.items():
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
        sp.add_argument("--metrics", default=metrics, help=f"metrics JSON (default {metrics})")
        sp.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the stage; errors end with a one-line message, exit 1."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage reports from GX
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (config.ConfigError, FileNotFoundError, ValueError, ConnectionError) as exc:
        print(f"rrlfeh {args.stage}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
