#!/usr/bin/env bash
# Set up what is missing, then lint, type-check and run the whole test suite (arguments are passed on to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
