"""Interruption and a full disk, on real `edgelm export` / `edgelm quantize` processes.

Each signal lands in a named phase of the staged section (edgelm.staging): OUT must then be as
it was (absent, or the old bundle --force was replacing), SIGINT and SIGTERM end with one
`error: interrupted ...` line, and a SIGKILL's staging folder (it cannot clean up) is gone after
the next run, which must succeed. A full disk is RLIMIT_FSIZE in the child (SIGXFSZ ignored, so
a write fails with EFBIG as it does with ENOSPC on a full disk): one line, nothing written.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgelm.runtime.manifest import check_files, read_manifest
from edgelm.staging import check_out_folder, staged_folder
from tests.test_bad_input import assert_one_line_error, run_cli

QUANTIZE = ("--method", "int8", "--no-gate")  # the tiny model's gate numbers are not the point here


def command(kind: str, checkpoints, bundles, out: Path) -> list[str]:
    if kind == "export":
        return ["export", str(checkpoints("gpt2")), str(out)]
    return ["quantize", str(bundles("gpt2")[0]), str(out), *QUANTIZE]


# Where a signal lands: as soon as the process's staging folder holds this (anything, when empty).
# export: the stage appears before the checkpoint is loaded; model.onnx while the graph is written;
# tokenizer.json just before verification (the longest phase). quantize: .work.* when pre-processing
# starts; its pre.onnx before quantizing; model.onnx after; manifest.json (provisional) before the
# gate and the speed runs. Each is at least a few hundred ms before the final rename.
EXPORT_POINTS = {"loading": "", "writing the graph": "model.onnx", "verifying": "tokenizer.json"}
QUANTIZE_POINTS = {"pre-processing": ".work.*", "quantizing": ".work.*/pre.onnx", "quantized": "model.onnx",
                   "gating": "manifest.json"}
# Each scenario: OUT's state, a sequence of kills on that OUT, then one run that must succeed.
SCENARIOS = [
    ("export", "absent", [("SIGKILL", "writing the graph"), ("SIGTERM", "verifying")]),
    ("export", "replaced with --force", [("SIGINT", "loading"), ("SIGKILL", "verifying")]),
    ("quantize", "absent", [("SIGKILL", "pre-processing"), ("SIGTERM", "quantizing"), ("SIGINT", "gating")]),
    ("quantize", "replaced with --force", [("SIGKILL", "gating"), ("SIGINT", "quantized"), ("SIGTERM", "pre-processing")]),
]


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def stage_of(proc: subprocess.Popen, out: Path) -> Path | None:
    found = list(out.parent.glob(f".{out.name}.{proc.pid}.*.partial"))
    return found[0] if found else None


def kill_at(proc: subprocess.Popen, out: Path, pattern: str, sig: signal.Signals) -> None:
    """Send SIG as soon as the process's stage holds a file matching PATTERN (any stage when empty)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stage = stage_of(proc, out)
        if stage is not None and (not pattern or any(stage.glob(pattern))):
            proc.send_signal(sig)
            return
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before its stage held {pattern!r}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    pytest.fail(f"its stage never held {pattern!r}")


def assert_left_as_it_was(out: Path, before: dict[str, str] | None) -> None:
    if before is None:
        assert not out.exists(), f"{out} appeared"
    else:
        assert fingerprint(out) == before, "the old bundle changed"


def assert_complete_new_bundle(out: Path, kind: str) -> None:
    manifest = read_manifest(out)
    check_files(out, manifest)
    assert (manifest.precision["method"] == "int8") == (kind == "quantize")
    assert "OLD" not in fingerprint(out), "the old bundle was not replaced"
    assert leftovers(out) == []


def existing_out(out: Path, bundles) -> dict[str, str]:
    """Put a complete bundle (marked OLD) at OUT, as --force finds it; returns its fingerprint."""
    shutil.copytree(bundles("gpt2")[0], out)
    (out / "OLD").write_text("the bundle --force is replacing")
    return fingerprint(out)


@pytest.mark.parametrize("kind,state,kills", SCENARIOS, ids=[f"{kind}-{state}" for kind, state, _ in SCENARIOS])
def test_signals_leave_out_as_it_was_and_the_next_run_cleans_up(kind, state, kills, checkpoints, bundles, tmp_path):
    out = tmp_path / "out"
    before, force = (existing_out(out, bundles), ("--force",)) if state != "absent" else (None, ())
    args = [sys.executable, "-m", "edgelm.cli", *command(kind, checkpoints, bundles, out), *force]
    points = EXPORT_POINTS if kind == "export" else QUANTIZE_POINTS
    for sig_name, point in kills:
        sig = signal.Signals[sig_name]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        kill_at(proc, out, points[point], sig)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode != 0, f"the run finished before {sig_name} at {point!r}: the kill point is too late"
        assert_left_as_it_was(out, before)
        # only this run's stage may be left: an earlier SIGKILL's went when this run started
        assert all(name.startswith(f".{out.name}.{proc.pid}.") for name in leftovers(out)), leftovers(out)
        if sig is signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL
            assert leftovers(out), "a SIGKILL cannot clean up; the test expected its stage"
        else:
            result = subprocess.CompletedProcess(args, proc.returncode, "", stderr)
            assert_one_line_error(result, f"interrupted by {sig_name}", f"{out} was left as it was")
            assert proc.returncode == 130, (sig_name, point, proc.returncode, stderr)
            assert leftovers(out) == [], "an interrupted run left its staging folder"
    result = run_cli(*command(kind, checkpoints, bundles, out), *force)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_complete_new_bundle(out, kind)


def test_a_kill_between_the_two_renames_of_force_gives_the_old_bundle_back(bundles, tmp_path):
    """SIGKILL after OUT was moved aside and before the new bundle took its place (microseconds,
    too short to hit from outside): the next run finds OUT missing and restores the old one."""
    out = tmp_path / "out"
    before = existing_out(out, bundles)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid no process has now
    out.rename(tmp_path / f".out.{dead.pid}.abc123.old")
    shutil.copytree(bundles("gpt2")[0], tmp_path / f".out.{dead.pid}.abc123.partial")  # the complete new one

    result = run_cli("quantize", bundles("gpt2")[0], out, *QUANTIZE)  # no --force: OUT exists again
    assert_one_line_error(result, "exists", "--force")
    assert fingerprint(out) == before
    assert leftovers(out) == []
    result = run_cli("quantize", bundles("gpt2")[0], out, *QUANTIZE, "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_complete_new_bundle(out, "quantize")


def test_an_interrupt_lost_in_a_finalizer_still_interrupts(tmp_path):
    """A KeyboardInterrupt raised inside a __del__ (or a weakref callback) cannot propagate: Python
    prints it as "Exception ignored" and goes on. The staged section still stops before the rename."""
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs here, where its KeyboardInterrupt is lost
                pass

    out, reached = tmp_path / "out", False
    with pytest.raises(KeyboardInterrupt, match=f"interrupted by SIGTERM; {out} was left as it was"):
        with staged_folder(out) as stage:
            (stage / "model.onnx").write_text("half")
            Finalized()
            reached = True
    assert reached, "the KeyboardInterrupt was not lost; this test did not test that"
    assert not out.exists() and leftovers(out) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ctrl_c_in_a_string_exec_still_exits_130_under_python_m(tmp_path):
    """CPython flags a KeyboardInterrupt leaving a string exec (dataclass methods are built so, at
    import) as unhandled even after it is caught: `python -m` then died of SIGINT, not exit 130."""
    (tmp_path / "interrupted_cli.py").write_text(
        "from edgelm.cli import one_line_errors\n"
        "one_line_errors(lambda: exec('raise KeyboardInterrupt', {}))()\n")
    result = subprocess.run([sys.executable, "-m", "interrupted_cli"], cwd=tmp_path, capture_output=True, text=True)
    assert_one_line_error(result, "interrupted")
    assert result.returncode == 130


def test_staging_folders_of_live_processes_and_foreign_names_are_kept(tmp_path):
    out = tmp_path / "out"
    live = tmp_path / f".out.{1}.abc123.partial"  # pid 1 is always alive
    foreign = [tmp_path / ".out.notes.partial", tmp_path / ".out.5.abc123.partial-keep", tmp_path / ".out.v2.7.x.partial"]
    for folder in (live, *foreign):
        folder.mkdir()
    assert check_out_folder(out, False, Exception) == []
    assert all(folder.is_dir() for folder in (live, *foreign))


def file_size_limit(limit: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    return set_limit


# model.onnx is about 540 kB: export writes it first, quantize its pre-processed copy first.
@pytest.mark.parametrize("kind", ["export", "quantize"])
@pytest.mark.parametrize("state", ["absent", "replaced with --force"])
def test_a_full_disk_is_one_line_and_writes_nothing(kind, state, checkpoints, bundles, tmp_path):
    out = tmp_path / "out"
    before, force = (existing_out(out, bundles), ("--force",)) if state != "absent" else (None, ())
    args = [sys.executable, "-m", "edgelm.cli", *command(kind, checkpoints, bundles, out), *force]
    result = subprocess.run(args, capture_output=True, text=True, preexec_fn=file_size_limit(300_000))
    assert_one_line_error(result, "the disk is full", f"writing {out}", "File too large", "free space and run again")
    assert result.returncode == 1
    assert_left_as_it_was(out, before)
    assert leftovers(out) == []


# 560 kB: quantize's pre-processed graph fits, onnxruntime's optimised temporary copy of it does not.
def test_a_failed_temporary_optimisation_is_one_warning_and_the_bundle_is_written(bundles, tmp_path):
    """onnxruntime's pre-processing writes an optimised copy to a temporary file; when that write
    fails it logs a traceback and goes on without it: one warning line instead, and a bundle."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "edgelm.cli", *command("quantize", None, bundles, out)]
    result = subprocess.run(args, capture_output=True, text=True, preexec_fn=file_size_limit(560_000))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "[ERROR]" not in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "optimisation failed" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: onnxruntime's graph optimisation failed"), result.stderr
    check_files(out, read_manifest(out))
