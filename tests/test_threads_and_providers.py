"""The default thread count follows the CPUs this process may use; the provider is said only when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from edgelm.runtime import load
from edgelm.runtime.threads import cgroup_quota, usable_cpus

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def fake_cgroups(root: Path, files: dict[str, str], membership: str) -> Path:
    """A /sys/fs/cgroup-like tree under ROOT with FILES, and a /proc/self/cgroup text; returns its path."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "proc_cgroup").write_text(membership)
    return root / "proc_cgroup"


def test_a_cgroup_v2_quota_caps_the_thread_count(tmp_path):
    proc = fake_cgroups(tmp_path, {"cpu.max": "max 100000\n", "box/cpu.max": "150000 100000\n"}, "0::/box\n")
    assert cgroup_quota(tmp_path, proc) == 1.5
    budget = usable_cpus(tmp_path, proc)
    assert budget.count == min(len(os.sched_getaffinity(0)), 2)
    assert "cgroup quota 1.5 CPUs" in budget.reason


def test_the_smallest_quota_on_the_path_to_the_root_wins(tmp_path):
    proc = fake_cgroups(tmp_path, {"cpu.max": "100000 100000", "a/cpu.max": "max 100000", "a/b/cpu.max": "400000 100000"},
                        "0::/a/b")
    assert cgroup_quota(tmp_path, proc) == 1.0
    assert usable_cpus(tmp_path, proc).count == 1


def test_a_cgroup_v1_cfs_quota_and_no_quota(tmp_path):
    proc = fake_cgroups(tmp_path, {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
                        "4:cpu,cpuacct:/\n3:memory:/x\n")
    assert cgroup_quota(tmp_path, proc) == 0.5
    assert usable_cpus(tmp_path, proc).count == 1  # half a CPU still needs one thread
    unlimited = fake_cgroups(tmp_path / "u", {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
                             "4:cpu,cpuacct:/")
    assert cgroup_quota(tmp_path / "u", unlimited) is None
    assert cgroup_quota(tmp_path, tmp_path / "absent") is None


def test_the_session_runs_the_chosen_count(bundles):
    lm = load(bundles("llama")[0], provider="cpu")
    assert lm.bundle.threads == usable_cpus()
    assert lm.bundle.session.get_session_options().intra_op_num_threads == usable_cpus().count
    explicit = load(bundles("llama")[0], provider="cpu", threads=1)
    assert explicit.bundle.threads.count == 1 and explicit.bundle.threads.reason == "asked for"


def pinned_to_one_cpu():
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def test_affinity_sets_the_default_and_inspect_and_stats_say_so(bundles):
    folder = str(bundles("llama")[0])
    inspect = subprocess.run([sys.executable, "-m", "edgelm.cli", "inspect", folder], capture_output=True, text=True,
                             preexec_fn=pinned_to_one_cpu, timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    assert "threads     1 (affinity 1 CPU" in inspect.stdout, inspect.stdout
    stats = subprocess.run([sys.executable, "-m", "edgelm.cli", "generate", folder, "hello", "--max-new-tokens", "3", "--stats"],
                           capture_output=True, text=True, preexec_fn=pinned_to_one_cpu, timeout=120)
    assert stats.returncode == 0 and "1 thread (affinity 1 CPU" in stats.stderr, stats.stderr


@pytest.mark.skipif(HAS_CUDA, reason="onnxruntime here offers CUDA")
def test_cpu_runs_say_nothing_unless_verbose(bundles):
    folder = str(bundles("llama")[0])
    quiet = subprocess.run([sys.executable, "-m", "edgelm.cli", "generate", folder, "hello", "--max-new-tokens", "3"],
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "edgelm.cli", "embed", str(bundles("bert/feature-extraction")[0]), "hi", "-v"],
                          capture_output=True, text=True, timeout=120)
    assert loud.returncode == 0
    assert loud.stderr.strip().splitlines() == [
        f"note: provider cpu (auto: this onnxruntime has no CUDA provider), {usable_cpus().count} "
        f"thread{'' if usable_cpus().count == 1 else 's'} ({usable_cpus().reason})"]
    inspect = subprocess.run([sys.executable, "-m", "edgelm.cli", "inspect", folder], capture_output=True, text=True, timeout=120)
    assert "provider    cpu (auto: this onnxruntime has no CUDA provider)" in inspect.stdout
