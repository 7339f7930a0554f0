"""The commands the README and docs/ show exist: every `make <target>` is a Makefile target,
every `rrlfeh <command>` a subcommand, every docs/ link a file, and the front page stays short."""

from __future__ import annotations

import json
import re

from rrlfeh.cli import build_parser

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code(text: str) -> str:
    """The code of a page: its fenced blocks and `inline` spans."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return "\n".join(blocks + re.findall(r"`([^`\n]+)`", rest))


def shown(pattern: str) -> set[str]:
    found: set[str] = set()
    for page in PAGES:
        found |= set(re.findall(pattern, code(page.read_text())))
    return found


def test_every_make_target_shown_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    used = shown(r"\bmake ([a-z][a-z0-9-]*)")
    assert used and not used - targets, sorted(used - targets)


def test_every_rrlfeh_command_shown_exists():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    used = shown(r"\brrlfeh ([a-z][a-z0-9-]*[a-z0-9])\b")
    assert {"predict", "compare", "summary"} <= used
    assert not used - commands, sorted(used - commands)


def test_links_between_pages_reach_files_and_the_front_page_is_short():
    for page in PAGES:
        for target in re.findall(r"\]\(((?:docs/)?[\w/.-]+\.md)\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
    assert len((REPO / "README.md").read_text().splitlines()) <= 150


def test_the_served_answer_shown_is_strict_json_with_the_output_columns():
    from rrlfeh.serving.pipeline import OUTPUT_COLUMNS

    text = (REPO / "docs" / "using.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    assert blocks

    def refuse(token):
        raise ValueError(token)

    for block in blocks:
        answer = json.loads(block, parse_constant=refuse)
        for row in answer["predictions"]:
            assert list(row) == list(OUTPUT_COLUMNS)


def layout_entries() -> dict[str, str]:
    """docs/layout.md's src/rrlfeh/ block: each entry's name (`cli.py`, `serving/`) and its text
    (the entry's line and its indented continuation lines)."""
    block = re.search(r"```\n(.*?)```", (REPO / "docs" / "layout.md").read_text(), re.S).group(1)
    part = block.split("src/rrlfeh/\n", 1)[1].split("\ntests/", 1)[0]
    entries: dict[str, str] = {}
    name = None
    for line in part.splitlines():
        m = re.match(r"  (\S+)\s", line + " ")
        if m:
            name = m.group(1)
            entries[name] = line
        elif name:
            entries[name] += " " + line.strip()
    return entries


def test_the_layout_page_names_every_module_and_nothing_else():
    pkg = REPO / "src" / "rrlfeh"
    entries = layout_entries()
    modules = {p.name for p in pkg.glob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.name}/" for p in pkg.iterdir() if (p / "__init__.py").exists()}
    assert set(entries) == modules | packages, sorted(set(entries) ^ (modules | packages))
    for sub in packages:
        words = set(re.findall(r"[a-z_0-9]+", entries[sub]))
        stems = {p.stem for p in (pkg / sub).glob("*.py") if p.stem != "__init__"}
        missing = {s for s in stems if s not in words and s.rstrip("s") not in words}
        assert not missing, f"docs/layout.md {sub}: {sorted(missing)} not described"
