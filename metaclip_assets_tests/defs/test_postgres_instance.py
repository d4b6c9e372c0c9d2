"""The production instance config (deploy/dagster.yaml) against a real PostgreSQL server started on 127.0.0.1:
materialize the sample's metadata and one shard, then read the asset history back through a fresh instance.

Needs the Debian PostgreSQL server binaries (`apt-get install -y postgresql`); skipped with that reason where
they are missing. As root, the server runs as the `postgres` (or `nobody`) user: PostgreSQL refuses root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from metaclip_assets import layout
from metaclip_assets.definitions import curation_assets
from metaclip_assets.defs.partitions import NUM_SHARDS, SNAPSHOT_PARTITIONS_NAME
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets.storage import Storage
from metaclip_assets_tests.conftest import SAMPLE_METADATA_CONFIG, materialize, storage_resources

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = "SAMPLE-2024-10"
PASSWORD = "metaclip-test-pw"
pytestmark = pytest.mark.slow


def _postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user() -> tuple[list[str], int, int]:
    """Command prefix that drops root, and the uid/gid that must own the data directory."""
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
        return drop, user.pw_uid, user.pw_gid
    pytest.skip("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): apt-get install -y postgresql"
        )
    psycopg2 = pytest.importorskip("psycopg2", reason="dagster-postgres==0.29.27 (psycopg2-binary) not installed")
    prefix, uid, gid = _as_server_user()
    # Not pytest's tmp_path: that is private to root, and the server user must reach its directory.
    work = Path(tempfile.mkdtemp(prefix="metaclip-pg-"))
    (work / "pw").write_text(PASSWORD + "\n")
    for p in (work, work / "pw"):
        os.chown(p, uid, gid)
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(work / "data"),
            "-U",
            "dagster",
            "--pwfile",
            str(work / "pw"),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = _free_port()
    log = open(work / "server.log", "wb")
    server = subprocess.Popen(
        [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(work / "data"),
            "-p",
            str(port),
            "-k",
            str(work),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=port, user="dagster", password=PASSWORD, dbname="postgres", connect_timeout=2
                )
                break
            except psycopg2.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start:\n{(work / 'server.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
        conn.close()
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": PASSWORD,
            "DAGSTER_PG_DB": "dagster",
        }
    finally:
        server.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown: ends sessions, checkpoints, exits
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def test_sample_materialized_against_postgres_and_read_back(postgres, tmp_path, monkeypatch):
    for k, v in postgres.items():
        monkeypatch.setenv(k, v)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    data = tmp_path / "data"
    make_sample_snapshot(data, SNAPSHOT, seed=0)
    resources = storage_resources(data)
    shard_key = dg.MultiPartitionKey({"snapshot": SNAPSHOT, "shard": "000"})

    instance = _instance(home)
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert concurrency.pool_config.default_pool_limit == 1
        instance.event_log_storage.set_concurrency_slots("gpu", 1)  # = dagster instance concurrency set gpu 1

        instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, [SNAPSHOT])
        for selection, key, config in [
            (["metadata_entries"], None, SAMPLE_METADATA_CONFIG),
            (["crawl_pool", "matched_pool"], shard_key, {}),
        ]:
            materialize(curation_assets, selection, key, config, instance=instance, resources=resources)
        run_ids = {r.run_id for r in instance.get_runs()}
    finally:
        instance.dispose()

    # A second instance from the same file: everything comes back from the database, not from memory.
    reread = _instance(home)
    try:
        assert reread.get_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME) == [SNAPSHOT]
        assert {r.run_id for r in reread.get_runs()} == run_ids and len(run_ids) == 2
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in reread.get_runs())
        assert reread.get_materialized_partitions(dg.AssetKey("crawl_pool")) == {str(shard_key)}
        assert reread.get_materialized_partitions(dg.AssetKey("matched_pool")) == {str(shard_key)}
        [record] = reread.fetch_materializations(dg.AssetKey("matched_pool"), limit=10).records
        matched_rows = len(Storage(data).read_parquet(layout.matched_key(SNAPSHOT, 0, NUM_SHARDS)))
        assert record.asset_materialization.partition == str(shard_key)
        assert record.asset_materialization.metadata["dagster/row_count"].value == matched_rows > 0
        meta = reread.get_latest_materialization_event(dg.AssetKey("metadata_entries")).asset_materialization
        assert meta.metadata["sha256"].value == Storage(data).read_json(layout.METADATA_CURRENT)["sha256"]
        check = reread.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey("crawl_pool"), "shard_not_empty")
        )
        assert check.status.value == "SUCCEEDED" and check.run_id in run_ids
        assert reread.event_log_storage.get_concurrency_info("gpu").slot_count == 1
    finally:
        reread.dispose()
