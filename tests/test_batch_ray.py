"""edgelm batch on Ray: a local cluster of 2 CPUs started here. Ray mode gives exactly the direct runtime
calls' results, the Python API hands back Ray Datasets, a SIGKILLed driver resumes, and an actor killed
mid-run is replaced with the output still complete and exact."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from edgelm.batch import ROW_ID, run
from edgelm.batch.parts import KILL_HOOK, staging_folder
from edgelm.runtime import load
from tests import batch_corpus as corpus

ROWS = 2000
ACTOR = "MapBatches(BundleWorker)"  # in the process title of every actor edgelm batch starts


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for this module; its GCS address for other drivers."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # ray.init installs its own SIGTERM/SIGINT handlers in this (pytest's) process and leaves them after
    # shutdown; later tests that signal themselves (test_interruption.py) need the default ones back.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    for s, handler in handlers.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("task, fmt_in, fmt_out", [("embed", "parquet", "jsonl"), ("classify", "csv", "parquet"),
                                                   ("generate", "jsonl", "csv")])
def test_ray_mode_equals_the_direct_calls(task, fmt_in, fmt_out, cluster, embedder, classifier, decoder, tmp_path):
    bundle = {"embed": embedder, "classify": classifier, "generate": decoder}[task]
    source = corpus.table(ROWS, seed=20)
    options = {"max_new_tokens": 6} if task == "generate" else {}
    summary = run(bundle, corpus.write(source, tmp_path / f"in.{fmt_in}"), tmp_path / f"out.{fmt_out}", ray="auto",
                  workers=2, batch_size=24, progress=False, **options)
    assert summary.where == "Ray, 2 actors x 1 thread" and summary.computed == ROWS and summary.bad_rows == 0
    rows = corpus.read_output(summary.output)
    assert [r["id"] for r in rows] == list(range(ROWS)) and [r["text"] for r in rows] == source.column("text").to_pylist()
    front_end, texts = load(bundle), source.column("text").to_pylist()
    expected = {"embed": lambda: corpus.expected_embed(front_end, texts, 24),
                "classify": lambda: corpus.expected_classify(front_end, texts, 24),
                "generate": lambda: corpus.expected_generate(front_end, texts, 24, **options)}[task]()
    corpus.assert_results_equal(rows, expected, task)


def test_the_python_api_gives_ray_datasets(cluster, embedder, classifier, decoder, tmp_path):
    import ray.data

    source = corpus.table(400, seed=21)
    path = corpus.write(source, tmp_path / "in.parquet")
    lazy = run(embedder, path, ray="auto", workers=2)  # a path in, a lazy Dataset out, rows known by ROW_ID
    rows = sorted(lazy.take_all(), key=lambda r: r[ROW_ID])
    assert [r[ROW_ID] for r in rows] == list(range(400))
    local = run(embedder, path, progress=False)
    corpus.assert_results_equal(rows, corpus.results(local.to_pylist(), "embed"), "embed")

    texts = corpus.texts(60, seed=22)
    generated = run(decoder, ray.data.from_items([{"prompt": t} for t in texts]), column="prompt", max_new_tokens=5)
    assert set(generated.columns()) == {"prompt", "generated_text", "finish_reason", "prompt_tokens", "completion_tokens", "error"}
    lm = load(decoder)
    by_prompt = {r["prompt"]: r["generated_text"] for r in generated.take_all()}
    assert by_prompt == {t: lm.generate(t, max_new_tokens=5) for t in texts}

    read = ray.data.read_parquet(str(path))  # stages before ours need CPUs too: the actors must leave one
    finished: list = []
    worker = threading.Thread(target=lambda: finished.append(run(classifier, read, workers=2).take_all()), daemon=True)
    worker.start()
    worker.join(180)
    assert finished and len(finished[0]) == 400, "the pipeline waited for CPUs the actors held"
    with pytest.raises(Exception, match="sampling with a seed seeds each row with seed"):
        run(decoder, ray.data.from_items([{"text": "a"}]), temperature=0.8, seed=1)


def test_a_sigkilled_driver_resumes_and_writes_every_row_once(cluster, decoder, tmp_path):
    source = corpus.table(ROWS, seed=23)
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "edgelm.cli", "batch", str(decoder), str(corpus.write(source, tmp_path / "in.jsonl")),
            str(out), "--ray", cluster, "--workers", "2", "--max-new-tokens", "6", "--batch-size", "16", "--part-rows", "200"]
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK}
    killed = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**env, KILL_HOOK: "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists() and len(list(staging_folder(out).glob("part-*.parquet"))) == 2
    finished = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "kept from an earlier run" in finished.stderr and "Ray, 2 actors x 1 thread" in finished.stderr
    rows = corpus.read_output(out)
    assert [r["id"] for r in rows] == list(range(ROWS))
    expected = corpus.expected_generate(load(decoder), source.column("text").to_pylist(), 16, max_new_tokens=6)
    corpus.assert_results_equal(rows, expected, "generate")


def test_sigterm_in_ray_mode_saves_the_finished_rows_and_resumes(cluster, decoder, tmp_path):
    # ray.init puts its own SIGTERM handler into the driver; edgelm's (save the rows, one line, exit 130) must win
    source = corpus.table(ROWS, seed=25)
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "edgelm.cli", "batch", str(decoder), str(corpus.write(source, tmp_path / "in.jsonl")),
            str(out), "--ray", cluster, "--workers", "2", "--max-new-tokens", "12", "--batch-size", "16",
            "--part-rows", "100"]
    corpus.sigterm_once_a_part_is_saved(args, out, wait=180)
    finished = subprocess.run(args, capture_output=True, text=True, timeout=300, env=corpus.batch_env())
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "kept from an earlier run" in finished.stderr
    rows = corpus.read_output(out)
    assert [r["id"] for r in rows] == list(range(ROWS))
    expected = corpus.expected_generate(load(decoder), source.column("text").to_pylist(), 16, max_new_tokens=12)
    corpus.assert_results_equal(rows, expected, "generate")


def test_ray_mode_from_python_leaves_the_signal_handlers_as_they_were(embedder, tmp_path):
    # a Python user's process, with no Ray running: run(..., ray="auto") starts one and shuts it down
    script = f"""
import logging, signal
from pathlib import Path
import ray
from edgelm.batch import run
from tests import batch_corpus as corpus
before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
summary = run({str(embedder)!r}, corpus.write(corpus.table(50, seed=26), Path({str(tmp_path / "in.parquet")!r})),
              {str(tmp_path / "out.parquet")!r}, ray="auto", workers=1, progress=False)
assert summary.computed == 50 and not ray.is_initialized()
after = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
assert after == before, (before, after)
print("same handlers")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0 and "same handlers" in done.stdout, done.stderr[-2000:]


def actor_processes() -> list[psutil.Process]:
    """This cluster's edgelm actors (its raylet is a child of this process; another run's are left alone)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(ACTOR in part for part in process.info["cmdline"] or ()) and \
                    os.getpid() in (p.pid for p in process.parents()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_actor_is_replaced_and_the_output_is_complete_and_exact(cluster, decoder, tmp_path):
    source = corpus.table(3000, seed=24)
    out = tmp_path / "out.jsonl"
    stage = staging_folder(out)
    killed: list[int] = []

    def kill_an_actor_once_rows_are_saved():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            actors = actor_processes()
            if actors and stage.exists() and any(stage.glob("part-*.parquet")):
                actors[0].send_signal(signal.SIGKILL)
                killed.extend([actors[0], out.exists()])
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_an_actor_once_rows_are_saved, daemon=True)
    watcher.start()
    summary = run(decoder, corpus.write(source, tmp_path / "in.parquet"), out, ray="auto", workers=2,
                  max_new_tokens=12, batch_size=16, part_rows=100, progress=False)
    watcher.join(5)
    assert killed, "no actor process was found to kill"
    actor, finished_then = killed
    assert not finished_then and not _alive(actor)  # killed mid-run, and it is gone
    assert summary.computed == 3000
    rows = corpus.read_output(out)
    assert [r["id"] for r in rows] == list(range(3000))
    expected = corpus.expected_generate(load(decoder), source.column("text").to_pylist(), 16, max_new_tokens=12)
    corpus.assert_results_equal(rows, expected, "generate")
