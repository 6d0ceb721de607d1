"""A wheel built from the repository holds the package's data and, installed into a fresh virtual environment, runs
`pipelearn run` from outside the checkout.

The environment reuses the test run's own third-party packages (torch is large) through a .pth file; pipelearn
itself comes only from the wheel, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = {"pipelearn/py.typed", "pipelearn/transport/pipelearn.proto", "pipelearn/transport/pipelearn_pb2.pyi"}


def _build(into: Path) -> Path:
    """Build the wheel from a copy of the repository's tracked files, so that no build output lands in the checkout."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    source = into / "source"
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # the environment's own setuptools where it is recent enough for pyproject's build-system, else pip fetches one
    isolation = ["--no-build-isolation"] if _setuptools_major() >= 68 else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(into / "dist"), str(source)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (into / "dist").glob("pipelearn-*.whl")
    return wheel


def _setuptools_major() -> int:
    try:
        return int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return 0


@pytest.mark.slow
def test_a_wheel_installs_into_a_fresh_environment_and_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= PACKAGE_DATA, PACKAGE_DATA - names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    # the test run's third-party packages (torch, grpcio, ...), after the environment's own site-packages
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "shared-packages.pth").write_text("\n".join(sorted(shared)) + "\n")
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    installed = subprocess.run(install, capture_output=True, text=True, timeout=300, env=environment)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [python, "-c", "import pipelearn; print(pipelearn.__file__)"],
        cwd=outside,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's pipelearn, not the checkout's
    flags = "--dataset synthetic --no-batchnorm --devices 2 --epochs 1 --samples-per-device 40 --batch-size 20"
    run = subprocess.run(
        [env_dir / "bin" / "pipelearn", "run", *flags.split(), "--test-samples", "100", "--out", "out", "--json"],
        cwd=outside,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    metrics = json.loads((outside / "out" / "metrics.json").read_text())
    assert metrics["failed_devices"] == [] and json.loads(run.stdout)["test_accuracy"] == metrics["test_accuracy"]
    assert "server: device 1 joined from " in run.stderr
