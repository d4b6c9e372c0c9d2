#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with its test extras. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The C extension (metaclip_assets/_native/) links OpenSSL's libcrypto: its headers must be there to build it.
if [ ! -f /usr/include/openssl/evp.h ] && ! pkg-config --exists libcrypto 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian package: libssl-dev"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev >/dev/null
  else
    echo "setup: OpenSSL's headers are missing (openssl/evp.h): install libssl-dev (Debian) or openssl-devel" >&2
    exit 1
  fi
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
