"""The Dagster UI and the MLflow UI in a real browser: Debian's chromium driven by Playwright (never
`playwright install`), against `dagster dev` on a temporary instance holding the materialized sample, and an
`mlflow server` holding a real (tiny) training run of the sample snapshot.

Screenshots go to pytest's tmp dir and to test-artifacts/ui/ in the checkout (CI can keep them). Skipped only
where chromium (`apt-get install -y chromium`) or playwright (`pip install playwright==1.65.2`) is missing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from metaclip_assets.definitions import pipeline_assets
from metaclip_assets.defs.acquisition_assets import ImageSourceResource
from metaclip_assets.defs.partitions import NUM_SHARDS, SNAPSHOT_PARTITIONS_NAME, shard_partitions
from metaclip_assets.defs.training_assets import TrainingLauncher
from metaclip_assets.sample.snapshot import make_sample_snapshot
from metaclip_assets_tests.conftest import (
    SAMPLE_METADATA_CONFIG,
    asset_metadata,
    curate,
    materialize,
    materialize_shards,
    storage_resources,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "test-artifacts" / "ui"
SNAPSHOT = "SAMPLE-2024-10"
CURATION = ["metadata_entries", "crawl_pool", "matched_pool", "entry_counts", "balanced_subset", "data_card"]
# Flags that work on this machine kind (platform notes, section 9); the profile dir is a launch argument.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.slow


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("chromium not installed: apt-get install -y chromium (Debian package; no `playwright install`)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install playwright==1.65.2")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group, stopped with SIGTERM to the whole group. SIGINT is restored
    in the child: Dagster maps SIGTERM to the SIGINT handler, which a non-interactive parent leaves ignored."""

    def __init__(self, name: str, cmd: list[str], env: dict, log_dir: Path, ready_path: str, port: int):
        self.name, self.url, self.ready_path = name, f"http://127.0.0.1:{port}", ready_path
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"{self.name} not ready after {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:  # children left in the group (code server, run workers) go with it
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def _materialize_sample(home: Path, data: Path, mlflow: Server) -> dict:
    """The sample, materialized in-process into the instance that `dagster dev` will serve, as
    scripts/run-sample.sh does with the CLI (without a CLI start per command): curation, its webdataset
    shards, and the tiny training (a Pipes subprocess), tracked in the MLflow server. Returns the training's
    materialization metadata."""
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    make_sample_snapshot(data, SNAPSHOT, seed=0)
    launcher = TrainingLauncher(mode="local", env={"MLFLOW_TRACKING_URI": mlflow.url, "OMP_NUM_THREADS": "1"})
    resources = storage_resources(data, image_source=ImageSourceResource(kind="warc"), training_launcher=launcher)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        instance.add_dynamic_partitions(SNAPSHOT_PARTITIONS_NAME, [SNAPSHOT])
        kwargs = {"instance": instance, "resources": resources}
        curate(
            pipeline_assets,
            SNAPSHOT,
            metadata_config=SAMPLE_METADATA_CONFIG,
            snapshot_selection=["entry_counts", "balanced_subset", "data_card"],
            snapshot_config={"ops": {"balanced_subset": {"config": {"t": 30}}}},
            **kwargs,
        )
        shards_config = {"ops": {"webdataset_shards": {"config": {"image_size": 64, "samples_per_shard": 256}}}}
        materialize_shards(pipeline_assets, ["webdataset_shards"], SNAPSHOT, shards_config, **kwargs)  # 64 px images
        mlflow.wait_ready()  # booted meanwhile
        training = {"samples_budget": 64 * 16, "log_every": 4, "threads": 1, "mlflow_ui_url": mlflow.url}
        run_config = {"ops": {"clip_checkpoint": {"config": training}}}
        result = materialize(pipeline_assets, ["clip_checkpoint"], SNAPSHOT, run_config, **kwargs)
        return asset_metadata(result, "clip_checkpoint")
    finally:
        instance.dispose()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """MLflow first: it boots (10-15 s) while the sample is curated, and is up for the training. `dagster dev`
    starts only after everything is materialized, so that the automation sensor's first evaluation sees a
    settled instance and launches nothing on its own during the test."""
    _chromium()
    work = tmp_path_factory.mktemp("ui")
    home, data = work / "dagster_home", work / "data"
    home.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for k in ("MLFLOW_TRACKING_URI", "DAGSTER_PIPES_CONTEXT"):
        env.pop(k, None)
    mlflow_port, dagster_port = _free_port(), _free_port()
    mlflow = Server(
        "mlflow",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{work}/mlflow.db",
            "--default-artifact-root",
            str(work / "mlflow-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        work,
        "/health",
        mlflow_port,
    )
    started = [mlflow]
    try:
        training = _materialize_sample(home, data, mlflow)
        dagster = Server(
            "dagster-dev",
            [str(BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(dagster_port), "-w", "workspace.yaml"],
            {**env, "DAGSTER_HOME": str(home), "METACLIP_DATA_ROOT": str(data), "METACLIP_NUM_SHARDS": str(NUM_SHARDS)},
            work,
            "/server_info",
            dagster_port,
        )
        started.append(dagster)
        dagster.wait_ready()
        yield {"dagster": dagster, "mlflow": mlflow, "home": home, "data": data, "training": training}
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=_chromium(), headless=True, args=FLAGS, viewport={"width": 1600, "height": 1000}
        )
        ctx.set_default_timeout(60_000)
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def save(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        shutil.copyfile(path, ARTIFACTS / path.name)
        return path

    return save


def _wait_for_any(page, texts: list[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for text in texts:
            if page.get_by_text(text, exact=True).count():
                return text
        page.wait_for_timeout(1000)
    raise TimeoutError(f"none of {texts} on {page.url} after {timeout_s} s")


def test_dagster_ui_shows_curation_and_materializes_from_the_browser(servers, browser, shot):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    base, page = servers["dagster"].url, browser.new_page()
    page.goto(base + "/asset-groups")
    try:  # a fresh instance greets with "Join the Dagster community"
        page.get_by_role("button", name="Skip").click(timeout=10_000)
    except PlaywrightTimeout:
        pass

    # the asset graph of the curation group: every asset, with its partition fill and checks
    page.goto(base + "/locations/metaclip_assets/asset-groups/curation")
    for asset in CURATION:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    shot(page, "00-dagster-asset-graph-loaded")  # kept even when an assertion below fails
    expect(page.get_by_text("100% filled").first).to_be_visible()
    expect(page.get_by_text(f"{NUM_SHARDS} partitions").first).to_be_visible()
    shot(page, "01-dagster-asset-graph")

    # crawl_pool's partitions: every shard of the snapshot materialized
    page.goto(base + "/assets/crawl_pool?view=partitions")
    expect(page.get_by_text(f"Materialized ({NUM_SHARDS})")).to_be_visible()
    for key in [*shard_partitions.get_partition_keys(), SNAPSHOT]:
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    shot(page, "02-dagster-crawl_pool-partitions")

    # the data card: Markdown rendered in its dialog, with the plot (an inline PNG that actually decodes)
    page.goto(base + "/assets/data_card")
    page.get_by_text("[Show Markdown]").first.click()
    card = page.get_by_role("dialog")
    expect(card.get_by_text(f"Data card: {SNAPSHOT}")).to_be_visible()
    for heading in ("Funnel", "Bad records (skipped, by reason)", "Cumulative matches over entries"):
        expect(card.get_by_text(heading, exact=True)).to_be_visible()
    plot = card.locator("img[alt='cumulative matches']")
    plot.scroll_into_view_if_needed()
    assert plot.get_attribute("src").startswith("data:image/png;base64,")
    width, height = plot.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 300 and height > 200
    shot(page, "03-dagster-data_card-markdown-plot")
    page.keyboard.press("Escape")

    # launch data_card's sample partition from the Materialize dialog and watch the run succeed
    instance = dg.DagsterInstance.from_config(str(servers["home"]))
    try:
        before = len(instance.fetch_materializations(dg.AssetKey("data_card"), limit=100).records)
    finally:
        instance.dispose()
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.locator(".dagster-dialog")
    expect(dialog.get_by_text("Launch runs to materialize data_card")).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.locator(".dagster-popover").get_by_text(SNAPSHOT, exact=True).first.click()
    dialog.get_by_text("Launch runs to materialize data_card").click()  # closes the partition popover
    shot(page, "04-dagster-materialize-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible()
    run_prefix = re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0)
    page.goto(f"{base}/runs")
    page.get_by_text(run_prefix, exact=True).first.click()
    status = _wait_for_any(page, ["Success", "Failure", "Canceled"], timeout_s=240)
    shot(page, "05-dagster-run-from-ui")
    assert status == "Success", servers["dagster"].tail()

    instance = dg.DagsterInstance.from_config(str(servers["home"]))
    try:
        records = instance.fetch_materializations(dg.AssetKey("data_card"), limit=100).records
        assert len(records) == before + 1
        assert records[0].run_id.startswith(run_prefix) and records[0].partition_key == SNAPSHOT
    finally:
        instance.dispose()
    page.close()


def test_mlflow_ui_lists_the_sample_training_with_its_metrics(servers, browser, shot):
    """The sample's clip_checkpoint training (above) logged its run to the MLflow server: the run list and the
    run page show it, with the metrics it reported to Dagster."""
    from playwright.sync_api import expect

    base, page, training = servers["mlflow"].url, browser.new_page(), servers["training"]
    run_id, run_url = training["mlflow_run_id"], training["mlflow_run_url"]
    experiment = re.search(r"#/experiments/(\w+)/runs/", run_url).group(1)
    assert run_url.startswith(base) and run_id in run_url
    run_name = f"{SNAPSHOT}/tiny-clip"
    # MLflow 3 opens experiments in its GenAI view; the run table is the "machine_learning" workflow
    page.goto(f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    expect(page.get_by_text(run_name).first).to_be_visible()
    expect(page.get_by_text("1 matching run")).to_be_visible()
    shot(page, "06-mlflow-runs")

    page.get_by_text(run_name).first.click()
    expect(page.get_by_text("Metrics (", exact=False).first).to_be_visible()
    assert run_id in page.url
    for metric in ("loss", "lr", "final_loss", "logit_scale"):
        expect(page.get_by_role("cell", name=metric, exact=True).first).to_be_visible()
    expect(page.get_by_text(repr(training["final_loss"])[:7]).first).to_be_visible()  # the logged value
    expect(page.get_by_text("Finished", exact=True).first).to_be_visible()
    page.get_by_role("cell", name="final_loss", exact=True).first.scroll_into_view_if_needed()
    shot(page, "07-mlflow-run-metrics")
    page.close()
