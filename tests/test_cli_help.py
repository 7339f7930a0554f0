"""Every `rrlfeh` subcommand's --help says what it does, and predict's names its real default."""

from __future__ import annotations

import subprocess

import pytest

from rrlfeh.cli import build_parser

from conftest import BIN

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_says_what_the_subcommand_does(name: str):
    out = subprocess.run([str(BIN / "rrlfeh"), name, "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # argparse: usage lines, a blank line, then the description (absent without one)
    after_usage = lines[next(i for i, line in enumerate(lines) if not line.strip()) + 1]
    assert after_usage.startswith(f"rrlfeh {name}: "), out.stdout[:400]
    assert "Traceback" not in out.stderr and not out.stderr.strip(), out.stderr[:400]


def test_predict_help_names_where_the_default_model_comes_from():
    out = subprocess.run([str(BIN / "rrlfeh"), "predict", "--help"], capture_output=True,
                         text=True, timeout=120).stdout
    text = " ".join(out.split())
    assert "score.model_uri of the --params file" in text and "dvc exp run" in text
