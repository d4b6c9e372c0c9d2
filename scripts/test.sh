#!/usr/bin/env bash
# Install what the tests need (idempotent), then run the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore::DeprecationWarning
exec .venv/bin/python -m pytest "$@"
