#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: train on digits, sample, test bits/dim.
# Arguments are Hydra overrides, e.g. `bash scripts/run.sh sde=ve solver=ode logger=none`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then set -- sde=vp solver=pc; fi
exec .venv/bin/python experiments/run.py "$@"
