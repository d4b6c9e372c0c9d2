#!/usr/bin/env bash
# Install what the tests need (idempotent), lint (ruff), then run the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian packages for the PostgreSQL and browser tests (they skip with this reason where missing).
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
  command -v chromium >/dev/null || missing="$missing chromium"
  if [ -n "$missing" ]; then
    echo "test: installing Debian packages:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
# Lint and format first: seconds, and a style slip fails here with the file and line instead of in review.
.venv/bin/ruff check metaclip_assets metaclip_assets_tests bench
.venv/bin/ruff format --check metaclip_assets metaclip_assets_tests bench
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore::DeprecationWarning
exec .venv/bin/python -m pytest "$@"
