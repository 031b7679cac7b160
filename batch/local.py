"""Local mode: this process runs the pending rows window by window (plan.py) on one or more workers.

A worker is a copy of the bundle with its own onnxruntime session, driven by a thread of this
process (onnxruntime and the tokenizer release the GIL while they work). Several single-thread
workers keep every core busy on small batches, where one session's threads mostly wait for
each other: on short texts 2 single-thread workers embed more rows per second than one 2-thread
worker (measured in docs/benchmarks.md, "Batch inference"). Written here, not
taken from a library, because a worker must keep its own session: a thread pool hands each
window to whichever worker is free.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa

from edgelm.batch.driver import Compute
from edgelm.batch.plan import Plan
from edgelm.batch.tasks import apply, quiet_cuts


def load_bundle(bundle: Path, provider: str = "auto", threads: int | None = None, fast: bool = False):
    """The runtime's front end for BUNDLE (threads None: the runtime's default, the CPUs this process may use)."""
    from edgelm.runtime import load

    return load(bundle, provider=provider, threads=threads, fast=fast)


def default_workers(cpus: int) -> int:
    """Workers when --workers is not given: one per CPU, each on one thread (the measured best, see above)."""
    return cpus


def worker_threads(cpus: int, workers: int, asked: int | None) -> int:
    """onnxruntime threads per worker: ASKED (--threads), else the CPUs shared among the workers."""
    return asked if asked is not None else max(1, cpus // workers)


def load_workers(bundle: Path, workers: int, provider: str = "auto", threads: int | None = None,
                 fast: bool = False) -> list:
    """WORKERS copies of BUNDLE; only the first hashes the files (FAST aside): the others open what it just checked."""
    return [load_bundle(bundle, provider, threads, fast if i == 0 else True) for i in range(workers)]


def local_compute(front_ends: list, plan: Plan, ordered: bool = False) -> Compute:
    """Result windows, in the order they finish (ORDERED: in the windows' order); a worker runs one at a time."""

    def compute(done: np.ndarray) -> Iterator[pa.Table]:
        windows = iter(plan.windows(done))
        if len(front_ends) == 1:
            for window in windows:
                yield apply(front_ends[0], window, plan.job)
            return
        free: queue.SimpleQueue = queue.SimpleQueue()
        for front_end in front_ends:
            free.put(front_end)
        cancelled = threading.Event()  # an interrupted run: generation windows stop at their next token

        def one(window: pa.Table) -> pa.Table:
            front_end = free.get()
            try:
                return apply(front_end, window, plan.job, cancelled)
            finally:
                free.put(front_end)

        pool = ThreadPoolExecutor(len(front_ends), thread_name_prefix="edgelm-batch")
        # one warnings filter for the whole run, set here in the main thread (catch_warnings is not thread-safe)
        with quiet_cuts(plan.job):
            try:
                running = [pool.submit(one, w) for w in islice(windows, 2 * len(front_ends))]
                while running:
                    if ordered:
                        finished = [running.pop(0)]  # its result() below waits for it
                    else:
                        done_now, _ = wait(running, return_when=FIRST_COMPLETED)
                        finished = [f for f in running if f in done_now]
                        running = [f for f in running if f not in done_now]
                    for future in finished:
                        yield future.result()
                        following = next(windows, None)
                        if following is not None:
                            running.append(pool.submit(one, following))
            finally:
                cancelled.set()
                pool.shutdown(wait=True, cancel_futures=True)

    return compute
