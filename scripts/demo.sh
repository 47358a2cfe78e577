#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: every solver on the closed-form oracle.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python experiments/demo.py "$@"
