"""The part every worker shares: a thread serving one bundle from a queue that the event loop fills.

`submit` (event loop) refuses with QueueFull past --max-queue or once stopping; the thread calls
`_next_jobs` to wait for work and take what it can run; `stop` lets it finish what it holds.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from edgelm.serve.metrics import Metrics


class QueueFull(Exception):
    """--max-queue jobs are already waiting, or the server is shutting down."""


class WorkerThread:
    def __init__(self, kind: str, name: str, max_queue: int, metrics: Metrics):
        self.name, self.max_queue, self.metrics = name, max_queue, metrics
        self._waiting: collections.deque = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"{kind}-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, jobs: list[Any]) -> None:
        with self._wake:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting for {self.name}")
            self._waiting.extend(jobs)
            self.metrics.queue_depth.labels(self.name).set(len(self._waiting))
            self._wake.notify()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the jobs already taken (running or waiting), then end the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    def _next_jobs(self, busy: bool, take: Callable[[collections.deque], list]) -> list | None:
        """Wait for work unless BUSY (jobs are running); TAKE what can run now. None: stopping, nothing left."""
        with self._wake:
            while not self._waiting and not busy and not self._stopping:
                self._wake.wait()
            if self._stopping and not self._waiting and not busy:
                return None
            jobs = take(self._waiting)
            self.metrics.queue_depth.labels(self.name).set(len(self._waiting))
            return jobs

    def _loop(self) -> None:
        raise NotImplementedError
