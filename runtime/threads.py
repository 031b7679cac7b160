"""How many threads a session should use: the CPUs this process may really run on.

onnxruntime's own default counts the host's physical cores. In a container limited to 2 CPUs on
a 64-core host (a CPU quota), or a process pinned with taskset (its affinity), that oversubscribes
the CPUs it has and every step waits on threads that cannot run. The usable count is the
affinity mask's size, capped by the cgroup CPU quota (cgroup v2's cpu.max, or v1's cfs quota).

    usable_cpus()  ->  CpuBudget(count=2, reason="affinity 2 CPUs, cgroup quota 2.0 CPUs")
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuBudget:
    """The thread count chosen, and what it was read from (printed by inspect and --stats)."""

    count: int
    reason: str


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> CpuBudget:
    """CPUs this process may use: its affinity, capped by the CPU quota of its cgroups."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
        parts = [f"affinity {_cpus(count)}"]
    else:  # macOS and Windows have no affinity call in os
        count = os.cpu_count() or 1
        parts = [_cpus(count)]
    quota = cgroup_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        parts.append(f"cgroup quota {_cpus(quota)}")
        count = min(count, max(1, math.ceil(quota)))
    else:
        parts.append("no CPU quota")
    return CpuBudget(max(count, 1), ", ".join(parts))


def _cpus(n: float) -> str:
    return f"{n:g} CPU" if n == 1 else f"{n:g} CPUs"


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The smallest CPU quota (in CPUs) on the path from this process's cgroup to the root, or None."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2: "0::/path"
            quotas += [q for d in _up(root, path) if (q := _v2_quota(d)) is not None]
        elif "cpu" in controllers.split(","):  # cgroup v1: "4:cpu,cpuacct:/path"
            base = next((root / n for n in ("cpu,cpuacct", "cpu", "cpuacct,cpu") if (root / n).is_dir()), None)
            if base is not None:
                quotas += [q for d in _up(base, path) if (q := _v1_quota(d)) is not None]
    return min(quotas) if quotas else None


def _up(base: Path, path: str) -> list[Path]:
    """BASE/path and each of its parents up to BASE (a container often sees only its own root)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    """cpu.max is 'max PERIOD' (no limit) or 'QUOTA PERIOD' in microseconds."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
