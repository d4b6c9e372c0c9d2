#!/usr/bin/env bash
# Rebuild metaclip_assets/_native/*.c (README.md there) with AddressSanitizer + UndefinedBehaviorSanitizer and run the
# tests that drive it (the fuzz and differential tests in _native/test_kernels.py, crawl/test_pool.py,
# curation/test_matching.py). The normal build is put back on exit. Needs gcc's libasan/libubsan (on this machine kind). Usage: bash scripts/check-native-asan.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
SO=$(.venv/bin/python -c 'import metaclip_assets._native._kernels as m; print(m.__file__)')
cp "$SO" "$SO.normal"
trap 'mv -f "$SO.normal" "$SO"' EXIT
INC=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
gcc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -fwrapv -shared -fPIC \
  -I"$INC" metaclip_assets/_native/*.c -lcrypto -o "$SO"
LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0 \
  .venv/bin/python -m pytest -q -p no:cacheprovider metaclip_assets_tests/_native/test_kernels.py \
  metaclip_assets_tests/crawl/test_pool.py metaclip_assets_tests/curation/test_matching.py "$@"
