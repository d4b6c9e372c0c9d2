"""`python -m metaclip_assets.sample --root DIR [--snapshot ...]`: the generator's own CLI (`metaclip-assets
make-sample` is the user-facing one)."""

from metaclip_assets.sample.snapshot import main

raise SystemExit(main())
