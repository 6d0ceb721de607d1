"""The layers point one way (the contract in pyproject.toml), and the ground floor loads without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_a_layer_above_its_own() -> None:
    linter = Path(sys.executable).with_name("lint-imports")  # import-linter's command, installed beside this Python
    checked = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout  # names each import that breaks a layer


@pytest.mark.parametrize("module", ["pipelearn.schedule", "pipelearn.planner.simulate", "pipelearn.plan"])
def test_the_schedule_and_the_simulator_load_without_torch(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
