#!/usr/bin/env bash
# Build the documentation site (mkdocs-material + mkdocstrings) into site/, strictly: a broken link,
# a missing reference or a docstring that does not parse fails the build. Sets up .venv with the
# `docs` extra first; nothing is downloaded at build time. `bash scripts/docs.sh serve` serves it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,docs]"
.venv/bin/python scripts/api_reference.py >/dev/null
export NO_MKDOCS_2_WARNING=1
if [ "${1:-build}" = "serve" ]; then
    exec .venv/bin/mkdocs serve
fi
exec .venv/bin/mkdocs build --strict
