#!/usr/bin/env bash
# Set up what is missing, then lint, type-check and run the whole test suite (arguments are passed on to pytest:
# -m "not slow" runs the fast tier, which starts no server or device process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy
# one process: on two workers, a loaded machine failed tests that start many device processes (devices dropped
# past their liveness limits; docs/RESULTS.md, "Test suite"). `-n 2 --dist loadgroup` runs on two workers, with the
# tests that make network namespaces on one of them (xdist_group "netns").
.venv/bin/python -m pytest "$@"
