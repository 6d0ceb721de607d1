#!/usr/bin/env bash
# Set up everything: a virtual environment in .venv with pipelearn, its test tools and the offline data sets.
# Idempotent: when nothing changed since the last set-up it only checks, in a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "pipelearn needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=..." >&2; exit 2; }
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.pipelearn-setup
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ] && .venv/bin/python -c "import pipelearn, torch" 2>/dev/null; then
    echo "set up: .venv is current"
else
    .venv/bin/python -m pip install -q --upgrade pip
    # The exact pin takes the CPU build of torch; a looser requirement would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[dev]"
    echo "$wanted" > "$stamp"
fi
# Fashion-MNIST ships as a Debian package; optional, so a machine without apt or root still sets up.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
        || echo "note: Fashion-MNIST not installed (apt-get failed); everything else works without it"
fi
.venv/bin/pipelearn --version
