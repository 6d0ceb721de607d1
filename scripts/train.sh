#!/usr/bin/env bash
# Set up what is missing, then train: `pipelearn run` with its defaults (arguments are passed on to it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pipelearn run "$@"
