"""Embeddings for one encoder bundle: a thread that runs the requests waiting together as one batch.

Requests that arrive while a batch runs wait, and then go in together (up to MAX_TEXTS texts), so
sixteen clients sending one sentence each cost about one call of sixteen, not sixteen calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgelm.runtime.encoder import Encoder
from edgelm.serve.metrics import Metrics
from edgelm.serve.worker_thread import WorkerThread

log = logging.getLogger("edgelm.serve")
MAX_TEXTS = 256  # texts per batch run (the encoder splits them into its own batches)


@dataclass
class EmbedJob:
    texts: list[str]
    done: Callable[[np.ndarray | None, str | None], None]  # (vectors (n, dim), error); thread-safe


class EmbedWorker(WorkerThread):
    def __init__(self, name: str, encoder: Encoder, max_queue: int, metrics: Metrics, batch_size: int = 32):
        super().__init__("embed", name, max_queue, metrics)
        self.encoder, self.batch_size = encoder, batch_size

    def _loop(self) -> None:
        def take(waiting) -> list[EmbedJob]:  # every waiting request, up to MAX_TEXTS texts (at least one request)
            jobs, count = [], 0
            while waiting and (not jobs or count + len(waiting[0].texts) <= MAX_TEXTS):
                jobs.append(waiting.popleft())
                count += len(jobs[-1].texts)
            return jobs

        while (jobs := self._next_jobs(False, take)) is not None:
            texts = [t for job in jobs for t in job.texts]
            try:
                vectors = self.encoder.embed(texts, batch_size=self.batch_size)
            except Exception as e:
                log.exception("embedding failed for %s", self.name)
                for job in jobs:
                    job.done(None, f"the model failed while embedding: {e}")
                continue
            self.metrics.embedding_inputs.labels(self.name).inc(len(texts))
            at = 0
            for job in jobs:
                job.done(vectors[at:at + len(job.texts)], None)
                at += len(job.texts)
