#!/usr/bin/env bash
# Set up what is missing, then lint, type-check and run the whole test suite (arguments are passed on to pytest:
# -m "not slow" runs the fast tier, which starts no server or device process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy
# two workers; the tests that make network namespaces (the machine's, not a process's) share one (xdist_group)
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
