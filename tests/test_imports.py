"""`pipelearn --help`, `--version` and `import pipelearn` load neither torch nor grpc: they answer at once."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import runpy, sys
sys.argv = ["pipelearn", *{argv!r}]
try:
    runpy.run_module("pipelearn", run_name="__main__")
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(sorted(m for m in ("torch", "grpc", "numpy") if m in sys.modules))
"""


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], ["run", "--help"], ["server", "--help"], ["bench", "--help"], ["plan", "-h"]]
)
def test_help_and_version_load_no_heavy_module(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_importing_the_package_or_the_schedule_loads_no_torch() -> None:
    probe = (
        "import sys, pipelearn, pipelearn.schedule, pipelearn.config, pipelearn.cli;"
        "assert 'torch' not in sys.modules and 'grpc' not in sys.modules, sorted(sys.modules);"
        "assert pipelearn.RunConfig is pipelearn.config.RunConfig;"
        "assert set(pipelearn.__all__) == {*pipelearn._PUBLIC, '__version__'}"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_every_public_name_resolves() -> None:
    import pipelearn

    for name in pipelearn.__all__:
        assert getattr(pipelearn, name) is not None
    assert "run" in dir(pipelearn)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pipelearn.nothing  # noqa: B018
