#!/usr/bin/env bash
# Create .venv and install sde_gen with its dev tools. Idempotent; safe to run on a fresh clone.
# The torch pin is the CPU wheel this project's machines carry; set SDE_GEN_TORCH to choose
# another build (e.g. SDE_GEN_TORCH="torch" on a GPU machine with CUDA wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SDE_GEN_TORCH:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    "${PIP[@]}" "$TORCH_SPEC"
fi
"${PIP[@]}" -e ".[dev]"
