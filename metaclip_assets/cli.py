"""`metaclip-assets`: the few things Dagster's own CLI does not do.

- `make-sample`: generate the bundled sample snapshot (deterministic, offline) under the data root.
- `register-snapshot`: add CommonCrawl snapshot ids as dynamic partitions (no Dagster CLI command does this).
- `list-snapshots`: show the registered snapshot partitions.
- `curate`: curate a registered snapshot through Dagster in a few runs (in-process, or a backfill with --launch).
- `export`: a checkpoint as open_clip's hub folder (`--to open_clip`) or a transformers CLIPModel (`--to hf`).
- `evaluate`: zero-shot (ImageNet wnid folders, any subset) and retrieval numbers for any open_clip model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from metaclip_assets import settings
from metaclip_assets.evaluation.standalone import add_arguments as add_evaluate_arguments


def _snapshot_arg(text: str) -> str:
    """Snapshot ids become folder names and partition keys: only the documented pattern passes (layout.py)."""
    from metaclip_assets import layout

    try:
        return layout.snapshot_id(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME  # here: `curate` sets the shard count first

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
    from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME

    for key in _instance().get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME):
        print(key)


def _json_arg(text: str) -> dict:
    """Inline JSON (starts with `{`) or the path of a JSON file."""
    try:
        value = json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{text}: not a JSON object nor a JSON file ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text}: not a JSON object nor a JSON file (a {type(value).__name__})")
    return value


def _count_arg(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer from 1 to 65536")
    return int(text)


def cmd_curate(args: argparse.Namespace) -> None:
    # The counts are part of the partition definitions, frozen when the code location loads: set them first.
    for setting, value in ((settings.NUM_SHARDS, args.shards), (settings.NUM_BUCKETS, args.buckets)):
        if value is not None:
            os.environ[setting.name] = str(value)
    instance = _instance()
    from metaclip_assets.defs import curate

    loaded = (curate.NUM_SHARDS, curate.NUM_BUCKETS)
    if (args.shards or loaded[0], args.buckets or loaded[1]) != loaded:  # main() called after the definitions loaded
        sys.exit(f"the definitions were loaded with {loaded[0]} shards, {loaded[1]} buckets: run in a new process")
    try:
        request = curate.Request(args.snapshot, args.metadata, args.metadata_config, args.t, args.register)
        curate.command(instance, request, launch=args.launch)
    except curate.CurateError as e:
        sys.exit(f"curate: {e}")


def cmd_export(args: argparse.Namespace) -> None:
    from metaclip_assets.export.run import export

    formats = list(dict.fromkeys(args.to or ["open_clip"]))
    # One format: DIR is the export. Several: one subfolder each.
    targets = {formats[0]: Path(args.out)} if len(formats) == 1 else {f: Path(args.out) / f for f in formats}
    try:
        results = export(args.checkpoint, targets, arch=args.arch)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"export failed: {e}")
    for fmt, r in results.items():
        print(f"{fmt}: {r['folder']} ({len(r['files'])} files, {r['bytes'] / 2**20:.1f} MiB); load it with:")
        print("    " + r["usage"].replace("\n", "\n    "))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from metaclip_assets.evaluation import standalone

    try:
        code = standalone.main(args)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"evaluate failed: {e}")
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="metaclip-assets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make-sample", help="generate the bundled sample snapshot(s)")
    p.add_argument("--data-root", default=settings.data_root())
    p.add_argument("--snapshot", nargs="+", default=["SAMPLE-2024-10"], type=_snapshot_arg)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_sample)
    p = sub.add_parser("register-snapshot", help="add snapshot ids as dynamic partitions of cc_snapshot")
    p.add_argument("snapshot", nargs="+", type=_snapshot_arg, help="CC-MAIN-YYYY-WW or a custom id")
    p.set_defaults(func=cmd_register)
    p = sub.add_parser("list-snapshots", help="print the registered snapshot partitions")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser(
        "curate",
        help="curate a snapshot through Dagster: metadata, every shard, the snapshot steps, with figures",
        description="Materialize metadata_entries (when there is none yet, or --metadata/--metadata-config is "
        "given), crawl_pool and matched_pool for every shard (one run for all shards under "
        "METACLIP_BACKFILL=range, so one matcher serves them all), then entry_counts, balanced_subset and "
        "data_card, in this process like `dagster asset materialize` with the in_process executor, recorded in "
        "the DAGSTER_HOME instance. Prints per step: runs, wall, CPU seconds, peak RSS, pairs, pairs per "
        "CPU-second. The UI and `dagster asset materialize` remain the other ways in.",
    )
    p.add_argument("snapshot", type=_snapshot_arg, help="a registered snapshot id (metaclip-assets list-snapshots)")
    p.add_argument("--metadata", metavar="FILE", help="a ready MetaCLIP metadata.json (JSON list of entries) to use")
    p.add_argument(
        "--metadata-config",
        type=_json_arg,
        metavar="JSON",
        help="metadata_entries config (inline JSON or a file, e.g. scripts/sample-metadata-config.json)",
    )
    p.add_argument("--t", type=float, help="balanced_subset's threshold t (default MetaCLIP's 20,000)")
    p.add_argument(
        "--shards",
        type=_count_arg,
        help="shards per snapshot (sets METACLIP_NUM_SHARDS for this command: the partitions are fixed when the "
        "definitions load, so the UI, daemon and other commands see the same count only if they set it too)",
    )
    p.add_argument(
        "--buckets", type=_count_arg, help="buckets of the snapshot steps (sets METACLIP_NUM_BUCKETS likewise)"
    )
    p.add_argument("--register", action="store_true", help="register the snapshot if it is not registered yet")
    p.add_argument(
        "--launch",
        action="store_true",
        help="store one asset backfill instead of running here: the daemon launches its runs through the "
        "instance's run coordinator and launcher (and must load the code location with the same settings)",
    )
    p.set_defaults(func=cmd_curate)
    p = sub.add_parser("export", help="write a checkpoint in open_clip's hub layout or as a transformers CLIPModel")
    p.add_argument("checkpoint", help="a checkpoint file (ours, any version, or open_clip_train's with --arch)")
    p.add_argument("--to", action="append", choices=["open_clip", "hf"], help="format (repeat for both: DIR/<format>/)")
    p.add_argument("--out", required=True, help="the folder to write (replaced if it holds an earlier export)")
    p.add_argument("--arch", help="open_clip architecture, for checkpoints that do not name theirs")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("evaluate", help="zero-shot / retrieval results.json for any open_clip model")
    add_evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
