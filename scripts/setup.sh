#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with its test extras. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
log=$(mktemp)
# pip prints one harmless warning per package about this machine's file:// index mirrors; keep them out of sight.
if ! .venv/bin/python -m pip install -q -e '.[dev]' >"$log" 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -40
  echo "setup: pip install failed (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
echo "setup: .venv ready ($(.venv/bin/python --version), dagster $(.venv/bin/python -c 'import dagster; print(dagster.__version__)'))"
