"""The CPUs and memory this process may actually use: cgroup limits (v2 and v1), CPU affinity, physical memory.

`os.cpu_count()` and the machine's RAM describe the node, not the pod: a pod limited to 2 CPUs and 4 GiB on a
64-core node would otherwise start 64 decoders with 64 x the memory. Plain reads of small files, every one
optional: a file that is missing or unparsable means "no limit there". `root` is the cgroup mount (tests pass a
folder of fake files); `proc_self_cgroup` says which cgroup this process is in, below that mount.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
_V1_UNLIMITED = 1 << 60  # v1 reports "no limit" as a huge page-rounded number (0x7FFFFFFFFFFFF000)


@dataclass(frozen=True)
class Capacity:
    cpus: int  # whole CPUs usable: affinity, lowered by a cgroup CPU quota (rounded up)
    memory_bytes: int  # the cgroup memory limit, else physical memory
    cpu_source: str  # where `cpus` came from, for logs
    memory_source: str

    def describe(self) -> dict:
        return {
            "cpus": self.cpus,
            "cpu_source": self.cpu_source,
            "memory_bytes": self.memory_bytes,
            "memory_source": self.memory_source,
        }


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_dirs(root: Path, proc_self_cgroup: Path, controller: str) -> list[Path]:
    """Folders to read, innermost first: this process's cgroup and each parent up to the mount (a parent's limit
    binds too). `controller` "" is the v2 unified tree; else a v1 controller, mounted as e.g. `cpu,cpuacct`.
    Inside a container the mount is usually the container's own cgroup: then only the mount itself exists."""
    if controller:
        try:
            bases = [p for p in sorted(root.iterdir()) if controller in p.name.split(",")]
        except OSError:
            bases = []
    else:
        bases = [root]
    rels: list[str] = []
    for line in (_read(proc_self_cgroup) or "").splitlines():
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (controller in controllers.split(",")) if controller else (hierarchy == "0" and not controllers):
            rels.append(path.strip().lstrip("/"))
    out: list[Path] = []
    for base in bases:
        for rel in rels:
            here = base / rel
            while here != base and base in here.parents:
                out.append(here)
                here = here.parent
        out.append(base)
    return [p for p in dict.fromkeys(out) if p.is_dir()]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs allowed by the CFS quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`), the tightest
    along the cgroup path; None when there is no quota."""
    limits: list[float] = []
    for d in _cgroup_dirs(root, proc_self_cgroup, ""):
        quota, _, period = (_read(d / "cpu.max") or "").partition(" ")
        if quota.isdigit() and period.strip().isdigit() and int(period) > 0:
            limits.append(int(quota) / int(period))
    for d in _cgroup_dirs(root, proc_self_cgroup, "cpu"):
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota and period and quota.isdigit() and period.isdigit() and int(quota) > 0 and int(period) > 0:
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int | None:
    """Bytes allowed by v2 `memory.max` or v1 `memory.limit_in_bytes`, the tightest along the cgroup path; None
    when unlimited."""
    limits: list[int] = []
    for d in _cgroup_dirs(root, proc_self_cgroup, ""):
        value = _read(d / "memory.max")
        if value and value.isdigit():
            limits.append(int(value))
    for d in _cgroup_dirs(root, proc_self_cgroup, "memory"):
        value = _read(d / "memory.limit_in_bytes")
        if value and value.isdigit() and int(value) < _V1_UNLIMITED:
            limits.append(int(value))
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (taskset, cpusets), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def detect(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> Capacity:
    """What this process may use. Unknown memory (no cgroup limit, no sysconf) is taken as 4 GiB, with a
    source that says so, rather than as unlimited."""
    cpus, cpu_source = affinity_cpus(), "sched_getaffinity"
    quota = cgroup_cpu_limit(root, proc_self_cgroup)
    if quota is not None and math.ceil(quota) < cpus:
        cpus, cpu_source = max(1, math.ceil(quota)), f"cgroup CPU quota {quota:g}"
    physical = physical_memory()
    limit = cgroup_memory_limit(root, proc_self_cgroup)
    if limit is not None and (physical is None or limit < physical):
        return Capacity(cpus, limit, cpu_source, "cgroup memory limit")
    if physical is not None:
        return Capacity(cpus, physical, cpu_source, "physical memory")
    return Capacity(cpus, 4 << 30, cpu_source, "unknown (assumed 4 GiB)")
