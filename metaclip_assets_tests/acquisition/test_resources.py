"""CPU and memory the process may use, read from fake cgroup trees (v2, v1, nested) and the worker plan built on
them: a 2-CPU 4 GiB pod on a big node must not get the node's worker count."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from metaclip_assets.acquisition import pipeline, resources, steps
from metaclip_assets.acquisition.pipeline import acquire, plan_workers
from metaclip_assets.acquisition.process import ProcessConfig
from metaclip_assets.acquisition.resources import Capacity
from metaclip_assets.acquisition.source import FetchResult
from metaclip_assets_tests.acquisition import _support as sup

GiB, MiB = 1 << 30, 1 << 20


def tree(root: Path, files: dict[str, str], cgroup: str) -> tuple[Path, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "proc-self-cgroup").write_text(cgroup)
    return root / "fs", root / "proc-self-cgroup"


def test_cgroup_v2_limits_tightest_along_the_path(tmp_path):
    root, proc = tree(
        tmp_path,
        {
            "fs/cpu.max": "max 100000\n",
            "fs/memory.max": "max\n",
            "fs/kubepods/cpu.max": "400000 100000\n",
            "fs/kubepods/memory.max": str(8 * GiB),
            "fs/kubepods/pod1/cpu.max": "150000 100000\n",  # 1.5 CPUs
            "fs/kubepods/pod1/memory.max": str(4 * GiB),
        },
        "0::/kubepods/pod1\n",
    )
    assert resources.cgroup_cpu_limit(root, proc) == 1.5
    assert resources.cgroup_memory_limit(root, proc) == 4 * GiB
    cap = resources.detect(root, proc)
    assert cap.cpus == min(2, resources.affinity_cpus()) and cap.memory_bytes == min(
        4 * GiB, resources.physical_memory() or 4 * GiB
    )
    assert cap.memory_source == "cgroup memory limit" or cap.memory_bytes < 4 * GiB


def test_cgroup_v2_inside_a_container_reads_the_mount(tmp_path):
    root, proc = tree(tmp_path, {"fs/cpu.max": "200000 100000", "fs/memory.max": str(3 * GiB)}, "0::/\n")
    assert (resources.cgroup_cpu_limit(root, proc), resources.cgroup_memory_limit(root, proc)) == (2.0, 3 * GiB)


def test_cgroup_v1_quota_and_memory_and_unlimited(tmp_path):
    root, proc = tree(
        tmp_path,
        {
            "fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000",
            "fs/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            "fs/memory/docker/abc/memory.limit_in_bytes": str(2 * GiB),
            "fs/memory/memory.limit_in_bytes": "9223372036854771712",  # v1's "unlimited"
        },
        "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n",
    )
    assert resources.cgroup_cpu_limit(root, proc) == 2.5
    assert resources.cgroup_memory_limit(root, proc) == 2 * GiB
    unlimited, proc2 = tree(
        tmp_path / "u",
        {
            "fs/cpu/cpu.cfs_quota_us": "-1",
            "fs/cpu/cpu.cfs_period_us": "100000",
            "fs/memory/memory.limit_in_bytes": "9223372036854771712",
        },
        "1:cpu:/\n2:memory:/\n",
    )
    assert (
        resources.cgroup_cpu_limit(unlimited, proc2) is None and resources.cgroup_memory_limit(unlimited, proc2) is None
    )


def test_missing_or_garbage_files_mean_no_limit(tmp_path):
    root, proc = tree(tmp_path, {"fs/cpu.max": "lots\n", "fs/memory.max": "-3"}, "garbage\n0::/\n")
    assert resources.cgroup_cpu_limit(root, proc) is None and resources.cgroup_memory_limit(root, proc) is None
    cap = resources.detect(tmp_path / "nowhere", tmp_path / "nothing")
    assert cap.cpus == resources.affinity_cpus() and cap.memory_source in ("physical memory", "unknown (assumed 4 GiB)")


def test_plan_fits_decodes_into_the_budget():
    cfg = ProcessConfig(image_size=224)
    per = cfg.decode_bytes_bound()
    assert 8 * cfg.max_pixels < per < 8 * cfg.max_pixels + 32 * MiB  # ~706 MiB at Pillow's pixel limit
    pod = Capacity(cpus=16, memory_bytes=4 * GiB, cpu_source="test", memory_source="test")
    plan = plan_workers(cfg, pod, workers=32, body_bytes=16 * MiB, memory_fraction=0.5)
    # 2 GiB budget - 32 x 16 MiB bodies = 1.5 GiB: two worst-case decodes, not 16 or 32
    assert (plan.workers, plan.decode_workers, plan.memory_budget, plan.fits) == (32, 2, 2 * GiB, True)
    assert plan.worst_case_bytes <= plan.memory_budget and "32 fetch / 2 decode workers" in plan.line()
    small = plan_workers(cfg, Capacity(4, GiB, "test", "test"), workers=32, body_bytes=16 * MiB)
    assert small.decode_workers == 1 and not small.fits and "OVER BUDGET" in small.line()
    few_cpus = plan_workers(
        ProcessConfig(max_pixels=1_000_000), Capacity(2, 64 * GiB, "t", "t"), workers=8, body_bytes=MiB
    )
    assert few_cpus.decode_workers == 2  # memory for many; CPUs for two
    with pytest.raises(ValueError, match="memory_fraction"):
        plan_workers(cfg, pod, workers=1, body_bytes=1, memory_fraction=0)


class _Bodies:
    def __init__(self, body: bytes):
        self.body = body

    def fetch(self, url: str) -> FetchResult:
        return FetchResult(url, True, 200, "image/jpeg", self.body, "ok", 0.0)


def test_acquire_decodes_no_more_than_the_plan_at_once(tmp_path, monkeypatch):
    active, peak, lock = [0], [0], threading.Lock()
    real = pipeline.process_image

    def counted(data, cfg):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        try:
            return real(data, cfg)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(pipeline, "process_image", counted)
    rows = sup.curated_rows([(f"https://img.example/{i}.jpg", f"c {i}") for i in range(24)])
    cfg = ProcessConfig(image_size=16)
    plan = plan_workers(cfg, Capacity(8, 64 * GiB, "t", "t"), workers=8, body_bytes=MiB, decode_workers=2)
    res = acquire(rows, _Bodies(sup.made_jpeg(1)), tmp_path, snapshot="TEST-2024-01", image_size=16, plan=plan)
    assert res.rows == 24 and peak[0] == 2 and res.as_metadata()["workers"]["decode_workers"] == 2


def test_shard_settings_plan_uses_the_configured_pixel_limit_and_fraction(monkeypatch):
    pod = Capacity(cpus=16, memory_bytes=4 * GiB, cpu_source="t", memory_source="t")
    plan = steps.SourceSettings(kind="http").plan(steps.ShardSettings(), pod)
    assert (plan.workers, plan.decode_workers, plan.memory_fraction) == (32, 2, 0.5)
    monkeypatch.setenv("METACLIP_DECODE_MEMORY_FRACTION", "0.9")
    small_images = steps.ShardSettings(max_pixels=4_000_000)
    assert steps.SourceSettings(kind="http").plan(small_images, pod).decode_workers == 16  # one per CPU
    monkeypatch.setenv("METACLIP_DECODE_MEMORY_FRACTION", "2")
    with pytest.raises(ValueError, match="METACLIP_DECODE_MEMORY_FRACTION"):
        steps.SourceSettings().plan(steps.ShardSettings(), pod)
