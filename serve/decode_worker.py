"""Continuous batching for one decoder bundle: a thread that owns the runtime's open batch.

    worker.submit([Job(...)])       from the event loop; QueueFull when --max-queue jobs already wait
    loop:  admit waiting jobs into free slots -> one step for every running row (and one chunk of the prompts
           that arrived while others decode) -> text pieces to each job's sink -> finished or cancelled jobs leave

A job that arrives while others decode joins at the next step; one that finishes, or whose client
went away (`cancel`), frees its slot before the next step, so a waiting job takes it. The thread
never waits on a client: pieces go to the job's sink (an asyncio queue fed thread-safely), so a slow
reader cannot stall the batch. Decoding itself is the runtime's TextBatch, the loop LanguageModel
and `edgelm batch` drive too (slots, per-row options and seeds, prefix reuse, stop strings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgelm.errors import EdgelmError
from edgelm.runtime.generator import GeneratorParams, RuleSource
from edgelm.runtime.sampling import TokenLogprob
from edgelm.runtime.language_model import LanguageModel
from edgelm.runtime.text_batch import TextBatch
from edgelm.serve.metrics import Metrics
from edgelm.serve.worker_thread import WorkerThread

log = logging.getLogger("edgelm.serve")
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}  # runtime -> OpenAI


@dataclass
class Event:
    """What a job's sink receives: a text piece, and at the end the finish reason and token counts."""

    index: int  # the choice this belongs to
    text: str = ""
    finish_reason: str | None = None  # stop | length, on the job's last event
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # the job failed inside the runtime (a server error)
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens behind this event, when the job asked for logprobs


@dataclass
class Job:
    ids: list[int]
    params: GeneratorParams
    stop: tuple[str, ...]
    sink: Callable[[Event], None]  # must be thread-safe and must not block
    index: int = 0
    grammar: RuleSource | None = None  # response_format's JSON schema, or the tools' calls: each row follows it
    logprobs: int | None = None  # record each token's logprob and this many alternatives
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False

    def cancel(self) -> None:
        """The client went away: the job leaves the batch at the next step (a plain flag: set from the loop, read here)."""
        self.cancelled = True


@dataclass
class _Running:
    job: Job
    last: float  # when its previous token came
    first: bool = True


class DecodeWorker(WorkerThread):
    def __init__(self, name: str, lm: LanguageModel, max_batch: int, max_queue: int, metrics: Metrics,
                 chunked_prefill: bool = True, pool_bytes: int = 0):
        super().__init__("decode", name, max_queue, metrics)
        self.lm = lm
        self.batch = TextBatch(lm, slots=max_batch, interleave=chunked_prefill, pool_bytes=pool_bytes)
        self._eos = frozenset(lm.manifest.special_tokens.eos)  # not part of the text, so not of its logprobs (as OpenAI)
        self._running: dict[int, _Running] = {}

    def _loop(self) -> None:
        def take(waiting) -> list[Job]:  # as many as there are free slots
            return [waiting.popleft() for _ in range(min(self.batch.slots - len(self._running), len(waiting)))]

        while (admitted := self._next_jobs(bool(self._running), take)) is not None:
            try:
                for job in admitted:
                    self._admit(job)
                if self._running:
                    self._step()
            except Exception as e:  # a bug or an onnxruntime failure: fail the jobs, keep serving
                log.exception("decode step failed for %s", self.name)
                self._fail_all(f"the model failed while generating: {e}")
            self.metrics.running.labels(self.name).set(len(self._running))

    def _admit(self, job: Job) -> None:
        if job.cancelled:
            return
        gen = self.batch.generator
        hits, reused = gen.prefix_hits, gen.reused_tokens
        try:
            rule = job.grammar.rule() if job.grammar else None
            row = self.batch.add(job.ids, job.params, job.stop, rule, job.logprobs)  # prefill into a free slot (or the rest of a kept prefix)
        except Exception as e:  # EdgelmError: bad ids (the app checks first); anything else: the model failed
            if not isinstance(e, EdgelmError):
                log.exception("prefill failed for %s", self.name)
            _send(job, Event(job.index, error=str(e)))
            return
        self.metrics.prefix_hits.labels(self.name).inc(gen.prefix_hits - hits)
        self.metrics.reused_tokens.labels(self.name).inc(gen.reused_tokens - reused)
        if gen.pool is not None:
            self.metrics.pool_bytes.labels(self.name).set(gen.pool.bytes)
        self._running[row] = _Running(job, last=time.perf_counter())

    def _step(self) -> None:
        for row, run in list(self._running.items()):  # a client gone while its prompt prefilled, or since the last step
            if run.job.cancelled:
                self._leave(row)
        if not self._running:
            return
        updates = self.batch.step()  # one token for every running row
        now = time.perf_counter()
        for update in updates:
            run = self._running[update.row]
            logprobs = tuple(e for e in update.logprobs if e.token not in self._eos)
            if run.job.cancelled:
                self._leave(update.row)
                continue
            self._time_token(run, now)
            if update.finish_reason is None:
                if update.piece or logprobs:
                    _send(run.job, Event(run.job.index, update.piece, logprobs=logprobs))
                continue
            completion = len(self.batch.tokens(update.row))
            _send(run.job, Event(run.job.index, update.piece, FINISH[update.finish_reason], len(run.job.ids), completion,
                                 logprobs=logprobs))
            self.metrics.prompt_tokens.labels(self.name).inc(len(run.job.ids))
            self.metrics.completion_tokens.labels(self.name).inc(completion)
            self._leave(update.row)

    def _time_token(self, run: _Running, now: float) -> None:
        if run.first:
            self.metrics.ttft.labels(self.name).observe(now - run.job.arrived)
            run.first = False
        else:
            self.metrics.per_token.labels(self.name).observe(now - run.last)
        run.last = now

    def _leave(self, row: int) -> None:
        self.batch.release(row)
        del self._running[row]

    def _fail_all(self, message: str) -> None:
        for row, run in list(self._running.items()):
            _send(run.job, Event(run.job.index, error=message))
            self._leave(row)


def _send(job: Job, event: Event) -> None:
    try:
        job.sink(event)
    except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
        job.cancel()
