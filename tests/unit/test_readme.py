"""The README stays true: its configuration table is the one declared in code, its two set-up commands exist,
and .ci/run calls the test command."""

from __future__ import annotations

import re
from pathlib import Path

from core import config
from inferlog.admin_cli import END, START, all_config_classes

ROOT = Path(__file__).resolve().parents[2]


def test_readme_config_table_is_generated_from_the_declarations() -> None:
    text = (ROOT / "README.md").read_text()
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == config.markdown_table(all_config_classes()), "run: inferlog config --update-readme README.md"


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for block in re.findall(r"```sh\n(.*?)```", setup, re.S) for line in
                block.strip().splitlines()]  # fmt: skip
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun:" in makefile and "\ntest:" in makefile
