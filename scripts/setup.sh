#!/usr/bin/env bash
# Set up everything: a virtual environment in .venv with pipelearn, its test tools and the offline data sets.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The exact pin takes the CPU build of torch; a looser requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
# Fashion-MNIST ships as a Debian package; optional, so a machine without apt or root still sets up.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
        || echo "note: Fashion-MNIST not installed (apt-get failed); everything else works without it"
fi
.venv/bin/pipelearn --version
echo "set up: run '.venv/bin/pipelearn run', test with '.venv/bin/python -m pytest'"
