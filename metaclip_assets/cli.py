"""`metaclip-assets`: the few things Dagster's own CLI does not do.

- `make-sample`: generate the bundled sample snapshot (deterministic, offline) under the data root.
- `register-snapshot`: add CommonCrawl snapshot ids as dynamic partitions (no Dagster CLI command does this).
- `list-snapshots`: show the registered snapshot partitions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metaclip_assets import settings
from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME


def _instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        sys.exit("DAGSTER_HOME is not set: export DAGSTER_HOME=<dir> so partitions persist between commands")
    return dg.DagsterInstance.get()


def cmd_make_sample(args: argparse.Namespace) -> None:
    from metaclip_assets.sample.snapshot import make_sample_snapshot

    root = Path(args.data_root)
    for snapshot, seed in zip(args.snapshot, range(args.seed, args.seed + len(args.snapshot))):
        manifest = make_sample_snapshot(root, snapshot, seed=seed)
        print(
            f"sample snapshot {snapshot} (seed {seed}) written under {root.resolve()}: "
            f"{len(manifest.wat_files)} WAT + {len(manifest.warc_files)} WARC files, "
            f"{manifest.pairs_distinct:,} distinct image-text pairs, planted bad records {manifest.expected_skips}"
        )


def cmd_register(args: argparse.Namespace) -> None:
    instance = _instance()
    known = set(instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME))
    new = [s for s in args.snapshot if s not in known]
    if new:
        instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, new)
    print(
        f"registered {new or 'nothing new'}; {SNAPSHOT_PARTITIONS_NAME} now has "
        f"{len(instance.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME))} partitions"
    )


def cmd_list(args: argparse.Namespace) -> None:
    for key in _instance().get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME):
        print(key)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="metaclip-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-sample", help="generate the bundled sample snapshot(s)")
    p.add_argument("--data-root", default=settings.data_root())
    p.add_argument("--snapshot", nargs="+", default=["SAMPLE-2024-10"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_sample)
    p = sub.add_parser("register-snapshot", help="add snapshot ids as dynamic partitions of cc_snapshot")
    p.add_argument("snapshot", nargs="+")
    p.set_defaults(func=cmd_register)
    p = sub.add_parser("list-snapshots", help="print the registered snapshot partitions")
    p.set_defaults(func=cmd_list)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
