"""Embeddings and reranking for one encoder bundle: a thread that runs the requests waiting together as one batch.

Requests that arrive while a batch runs wait, and then go in together (up to MAX_TEXTS texts or
pairs), so sixteen clients sending one sentence each cost about one call of sixteen, not sixteen
calls. Only requests that run the same way share a call: embeddings with the same prompt name, or
rerank pairs; the first waiting request decides, and the others wait their turn in order.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgelm.runtime.encoder import Encoder
from edgelm.serve.metrics import Metrics
from edgelm.serve.worker_thread import WorkerThread

log = logging.getLogger("edgelm.serve")
MAX_TEXTS = 256  # texts (or pairs) per batch run (the encoder splits them into its own batches)


@dataclass
class EmbedJob:
    texts: list[str]
    done: Callable[[np.ndarray | None, str | None], None]  # (vectors (n, dim), error); thread-safe
    prompt: str | None = None  # a prompt name of the bundle's manifest

    @property
    def items(self) -> list[str]:
        return self.texts

    @property
    def kind(self) -> tuple:
        return ("embed", self.prompt)


@dataclass
class RerankJob:
    pairs: list[tuple[str, str]]  # (query, document)
    done: Callable[[np.ndarray | None, str | None], None]  # (scores (n,), error); thread-safe

    @property
    def items(self) -> list[tuple[str, str]]:
        return self.pairs

    @property
    def kind(self) -> tuple:
        return ("rerank",)


class EmbedWorker(WorkerThread):
    def __init__(self, name: str, encoder: Encoder, max_queue: int, metrics: Metrics, batch_size: int = 32):
        super().__init__("embed", name, max_queue, metrics)
        self.encoder, self.batch_size = encoder, batch_size

    def _loop(self) -> None:
        def take(waiting) -> list[EmbedJob | RerankJob]:  # waiting requests of the first one's kind, up to MAX_TEXTS items
            jobs, count = [], 0
            while waiting and (not jobs or (waiting[0].kind == jobs[0].kind and count + len(waiting[0].items) <= MAX_TEXTS)):
                jobs.append(waiting.popleft())
                count += len(jobs[-1].items)
            return jobs

        while (jobs := self._next_jobs(False, take)) is not None:
            items = [x for job in jobs for x in job.items]
            try:
                results = self._run(jobs[0], items)
            except Exception as e:
                log.exception("%s failed for %s", jobs[0].kind[0], self.name)
                for job in jobs:
                    job.done(None, f"the model failed while {'reranking' if isinstance(job, RerankJob) else 'embedding'}: {e}")
                continue
            at = 0
            for job in jobs:
                job.done(results[at:at + len(job.items)], None)
                at += len(job.items)

    def _run(self, first: EmbedJob | RerankJob, items: list) -> np.ndarray:
        """Vectors (n, dim) or scores (n,) of ITEMS, run the way FIRST (and every job taken with it) asks."""
        if isinstance(first, RerankJob):
            with warnings.catch_warnings():  # documents over max_context are cut by design (as Cohere and Jina do)
                warnings.simplefilter("ignore", UserWarning)
                scores = self.encoder.score_pairs(items, batch_size=self.batch_size)
            self.metrics.rerank_pairs.labels(self.name).inc(len(items))
            return scores
        vectors = self.encoder.embed(items, prompt=first.prompt, batch_size=self.batch_size)
        self.metrics.embedding_inputs.labels(self.name).inc(len(items))
        return vectors
