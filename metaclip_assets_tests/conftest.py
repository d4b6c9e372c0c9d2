"""Shared fixtures and helpers: locating ../shared (present on the team's machines, absent on a fresh clone), and the
one way the asset tests materialize (`from metaclip_assets_tests.conftest import materialize`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from metaclip_assets import settings

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the checkout; METACLIP_SHARED overrides it (e.g. CI clones elsewhere).
SHARED = settings.shared_dir(REPO_ROOT)


def _shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} not present: real-data test needs ../shared/{name} beside the checkout")
    return path


@pytest.fixture(scope="session")
def realdata() -> Path:
    return _shared_dir("realdata")


@pytest.fixture(scope="session")
def shared_metaclip() -> Path:
    return _shared_dir("metaclip")


# --- Dagster helpers shared by the asset tests. Dagster is imported inside them, so the plain-module tests (which
# load this file too) do not pay for it.

# The metadata settings scripts/run-sample.sh uses: Wikipedia's sample entries as well as WordNet's.
SAMPLE_METADATA_CONFIG = json.loads((REPO_ROOT / "scripts" / "sample-metadata-config.json").read_text())
# metadata_entries from WordNet alone: the fast path for tests that do not look at Wikipedia's entries.
WORDNET_ONLY = {"ops": {"metadata_entries": {"config": {"wiki_dump_globs": [], "pageview_globs": []}}}}


def materialize(
    assets,
    selection=None,
    partition_key=None,
    run_config=None,
    *,
    instance,
    resources=None,
    tags=None,
    raise_on_error=True,
):
    """`dg.materialize` as every asset test calls it: `selection` is a list of asset names (None: all of `assets`),
    `partition_key` a key or a {dimension: key} dict for the multi-partitioned assets. With `raise_on_error` a
    failed step raises, so the run it returns succeeded."""
    import dagster as dg

    if isinstance(partition_key, dict):
        partition_key = dg.MultiPartitionKey(partition_key)
    result = dg.materialize(
        assets,
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=resources,
        run_config=run_config or {},
        tags=tags,
        raise_on_error=raise_on_error,
    )
    assert result.success or not raise_on_error
    return result


def shard_keys(snapshot: str) -> dict:
    """{shard: partition key of that shard of the snapshot} for the per-shard assets, in shard order."""
    from metaclip_assets.defs.partitions import shard_partitions

    return {shard: {"snapshot": snapshot, "shard": shard} for shard in shard_partitions.get_partition_keys()}


def materialize_shards(assets, selection, snapshot: str, run_config=None, **kwargs) -> dict:
    """One run per shard of the snapshot, as the per-shard automation launches them: {shard: result}."""
    return {
        shard: materialize(assets, selection, key, run_config, **kwargs) for shard, key in shard_keys(snapshot).items()
    }


def curate(
    assets, snapshot: str, *, instance, resources, metadata_config, snapshot_selection=None, snapshot_config=None
) -> dict:
    """The sample's curation, step by step: metadata_entries, crawl_pool + matched_pool per shard, then (if
    `snapshot_selection` is given) the snapshot-level assets. Returns {"metadata", "shards", "snapshot"} results."""
    kwargs = {"instance": instance, "resources": resources}
    results = {"metadata": materialize(assets, ["metadata_entries"], run_config=metadata_config, **kwargs)}
    results["shards"] = materialize_shards(assets, ["crawl_pool", "matched_pool"], snapshot, **kwargs)
    if snapshot_selection:
        results["snapshot"] = materialize(assets, snapshot_selection, snapshot, snapshot_config, **kwargs)
    return results


@contextlib.contextmanager
def snapshot_instance(*snapshots: str):
    """A temporary Dagster instance with the snapshots registered as partitions (what the discovery sensor does)."""
    import dagster as dg

    from metaclip_assets.defs.partitions import SNAPSHOT_PARTITIONS_NAME

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, list(snapshots))
        yield instance


def storage_resources(root, **more) -> dict:
    """The resources of an asset test: storage under `root`, plus any others by key."""
    from metaclip_assets.defs.resources import CurationStorage

    return {"curation_storage": CurationStorage(data_root=str(root)), **more}


def asset_metadata(result, asset: str) -> dict:
    """The metadata values of the one materialization of `asset` in the run."""
    (materialization,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in materialization.metadata.items()}


# --- A local S3-compatible server for the object-storage tests (moto's server mode).
S3_BUCKET = "metaclip-test"


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server on 127.0.0.1 (a free port) holding the bucket S3_BUCKET. While it runs, the
    AWS_* variables point every S3 client (s3fs through botocore, in this process and its children) at it with fake
    credentials; the server is stopped and the variables restored at the end of the session."""
    import logging
    import os

    pytest.importorskip("s3fs", reason="the object-storage tests need s3fs: pip install -e '.[dev]'")
    moto_server = pytest.importorskip("moto.server", reason="the object-storage tests need moto[server] (dev extra)")
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setattr(logging.getLogger("werkzeug"), "level", logging.WARNING)  # not a log line per request
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_CONFIG_FILE", os.devnull)  # nothing from the machine's ~/.aws
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        s3fs.S3FileSystem.clear_instance_cache()  # an instance made before would keep its old endpoint
        try:
            s3fs.S3FileSystem().mkdir(S3_BUCKET)
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            server.stop()
