"""The README's first two commands are the ones that train and test, and CI runs exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None, "the README starts with a sh block of commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_starts_with_a_train_and_a_test_command() -> None:
    train, test = _readme_commands()
    assert train == "bash scripts/train.sh" and (ROOT / "scripts/train.sh").exists()
    assert test == "bash scripts/test.sh" and (ROOT / "scripts/test.sh").exists()


def test_ci_runs_the_readme_test_command() -> None:
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [line for line in ci if line and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert commands == [_readme_commands()[1]]


def test_both_commands_set_up_first() -> None:
    for script in ("train.sh", "test.sh"):
        lines = (ROOT / "scripts" / script).read_text().splitlines()
        assert "bash scripts/setup.sh" in lines, script
