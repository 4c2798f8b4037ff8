#!/usr/bin/env bash
# The prepared GPU check (scripts/gpu_check.py): CUDA tests and GPU figures in one JSON, under 8 minutes on
# one large GPU.  bash scripts/gpu_check.sh --out runs/gpu_check.json
# Python: $PYTHON, else the project's .venv, else python3 (a GPU image's own PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py "$@"
