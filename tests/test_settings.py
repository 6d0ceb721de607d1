"""One description per setting: the flags, their help and the README's flag table come from the fields."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pipelearn.config import DeviceOverride, RunConfig
from pipelearn.settings import BEGIN, END, docstrings, flag_table, readme_block, settings, with_readme_block

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_field_has_its_description() -> None:
    for cls in (RunConfig, DeviceOverride):
        assert set(docstrings(cls)) == {f.name for f in dataclasses.fields(cls)}, cls
    assert [s.name for s in settings()] == [f.name for f in dataclasses.fields(RunConfig)]


def test_a_field_without_a_description_is_refused() -> None:
    @dataclasses.dataclass
    class Bare:
        colour: str = "red"

    with pytest.raises(TypeError, match=r"Bare\.colour has no docstring"):
        settings(Bare)


def test_the_model_and_data_set_descriptions_name_every_registered_one() -> None:
    from pipelearn.data import DATASET_NAMES
    from pipelearn.models import MODEL_NAMES

    described = {s.name: s.description for s in settings()}
    assert all(name in described["model"] for name in MODEL_NAMES)
    assert all(name in described["dataset"] for name in DATASET_NAMES)


def test_the_table_has_a_row_per_setting_with_its_flag_key_and_default() -> None:
    rows = flag_table().splitlines()[2:]
    assert len(rows) == len(settings())
    assert "| `--timeout-s SECONDS` | `timeout_s` | `120` | Least time a device gets" in flag_table()
    assert "| `--split P\\|auto` | `split` | `2` |" in flag_table()  # a pipe in a cell is escaped
    assert "| (TOML only) | `device_overrides` |" in flag_table()
    assert "| `--netns`, `--no-netns` | `netns` | `false` |" in flag_table()


def test_the_readme_holds_the_generated_table() -> None:
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text[text.index(BEGIN) : text.index(END) + len(END)] == readme_block(), (
        "the README's flag table is stale: run `python -m pipelearn.settings README.md`"
    )


def test_the_module_rewrites_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{BEGIN}\nold table\n{END}\nafter\n")
    done = subprocess.run(
        [sys.executable, "-m", "pipelearn.settings", str(readme)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert readme.read_text() == f"# Title\n\nbefore\n{readme_block()}\nafter\n"
    with pytest.raises(ValueError, match="no <!-- flags:begin -->"):
        with_readme_block("no markers")
