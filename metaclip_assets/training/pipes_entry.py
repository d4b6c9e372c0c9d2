"""Bootstrapping shared by the `python -m` entry points of training and evaluation.

Both take `--config` (a JSON file, or inline JSON) and repeated `--set key=value`. Launched by their Dagster asset
(Pipes) they read the config from a Pipes extra, default `snapshot` to the partition key and report back through
the Pipes session, which also reports an exception before the process exits with it; launched by hand they run
standalone and the entry point decides the exit code.
Lives in the training package because the training image ships only that package (k8s/Dockerfile.train).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dagster_pipes import PipesContext, PipesDefaultContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes

C = TypeVar("C")


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings need no quotes: --set model=ViT-B-32-quickgelu


def config_data(args: argparse.Namespace, extra: dict | None = None, partition_key: str | None = None) -> dict:
    """The config fields, later sources winning: --config, the Pipes extra, --set; then the partition snapshot."""
    data: dict = {}
    if args.config:
        text = args.config if args.config.lstrip().startswith("{") else Path(args.config).read_text()
        data.update(json.loads(text))
    data.update(extra or {})
    for item in args.set or []:
        key, _, value = item.partition("=")
        data[key] = _parse_value(value)
    if partition_key and "snapshot" not in data:
        data["snapshot"] = partition_key
    return data


def config_from_args(
    config_cls: type[C], args: argparse.Namespace, extra: dict | None = None, partition_key: str | None = None
) -> C:
    """`config_cls.from_dict` of `config_data`: an unknown key is an error, not a silent default."""
    return config_cls.from_dict(config_data(args, extra, partition_key))


def run(
    argv: list[str] | None,
    package: str,
    description: str | None,
    config_cls: type[C],
    extra_key: str,
    standalone: Callable[[C], int],
    with_pipes: Callable[[PipesContext, C], Any],
    follower: Callable[[C], int] | None = None,
) -> int:
    """`python -m <package>`: parse the command line into a `config_cls`, then run `with_pipes` inside the Pipes
    session (config from the extra `extra_key`) or `standalone` without one.

    Under Pipes the config is built inside the session, so a bad config is reported to the run too. The exit code
    is 0 under Pipes (a failure raises), `standalone`'s otherwise. Under torchrun only rank 0 runs these; every
    other rank runs `follower` with the same config (read from the same Pipes context, without opening the message
    channel: one process speaks for the job).
    """
    parser = argparse.ArgumentParser(prog=f"python -m {package}", description=description)
    parser.add_argument("--config", help=f"JSON file, or inline JSON, with {config_cls.__name__} fields")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one field (JSON value)")
    args = parser.parse_args(argv)

    params = PipesEnvVarParamsLoader()
    if follower is not None and int(os.environ.get("RANK", "0")) != 0:  # torchrun sets RANK for each process
        extra, partition_key = None, None
        if params.is_dagster_pipes_process():
            with PipesDefaultContextLoader().load_context(params.load_context_params()) as context:
                extra, partition_key = (context.get("extras") or {}).get(extra_key), context.get("partition_key")
        return follower(config_from_args(config_cls, args, extra, partition_key))
    if not params.is_dagster_pipes_process():
        return standalone(config_from_args(config_cls, args))

    with open_dagster_pipes() as pipes:
        partition_key = pipes.partition_key if pipes.is_partition_step else None
        with_pipes(pipes, config_from_args(config_cls, args, pipes.extras.get(extra_key), partition_key))
    return 0
