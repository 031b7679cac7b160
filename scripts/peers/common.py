"""What every peer runner shares: read a job, time one scenario, print one JSON line.

A runner is started as `<engine python> scripts/peers/<engine>_runner.py JOB.json` and imports
this module (and numpy) only, so it works in any engine's virtual environment. The job says:

    {"action": "prepare", "variant": "Q8_0", "work": DIR, "sources": {...}, "threads": 2}
    {"action": "measure", "scenario": "single", "model": PATH, "variant": "Q8_0",
     "threads": 2, "rows": [[ids...]], "new_tokens": 128}

A runner module provides:

    prepare(job) -> str                       the model path (converted once, cached under work)
    open_model(job) -> model                  loaded with job["threads"] threads
    generate(model, rows, n) -> Run           greedy, exactly n new tokens per row, eos ignored
    teacher_forced_logits(model, ids) -> (len, vocab)   logits of IDS run as one prompt
    describe(model) -> str                    engine version and options, for the table header

Method (the same for every engine): one warm-up run of the whole scenario inside the process,
then TIMED_RUNS timed runs (3 for single, long and batch; 1 for deep), their median reported.
Time to first token = from the start of the call to the first generated token; decode tokens/s =
(n - 1) / (time of the last token - time of the first). Batches: aggregate tokens/s = rows * n /
wall time including prefill. Perplexity: exp(mean NLL) of tokens 1..len-1 given the ones before (teacher forcing, one window); the whole log-softmax is
also written to the job's `logprobs_out` (.npy) so that bench_peers.py can compare every variant's
distributions with its engine's float ones (KL divergence, top-1 agreement). The peak resident set
of the process (getrusage) is reported with every measurement.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

FIRST_IDS = 8  # generated ids reported for the agreement check
# Timed runs per process (after the warm-up), their median reported: the short scenarios take under a second,
# where this shared VM's speed moves by 10-20% from one second to the next.
TIMED_RUNS = {"single": 3, "long": 3, "batch": 3}


@dataclass
class Run:
    """What one generate call produced: new ids per row and when the first/last token appeared."""

    tokens: list[list[int]]
    first_s: float  # seconds from the call to the first new token (of every row, for a batch)
    total_s: float  # seconds from the call to the last new token


class Clock:
    """Stopwatch for a generate call: `first()` at the first token, `stop()` at the end."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first_at: float | None = None

    def first(self) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter() - self.start

    def run(self, tokens: list[list[int]]) -> Run:
        total = time.perf_counter() - self.start
        return Run(tokens, self.first_at if self.first_at is not None else total, total)


def log_softmax(logits: np.ndarray, ids: list[int]) -> np.ndarray:
    """(len, vocab) logits of a teacher-forced pass -> (len-1, vocab) log-probabilities of the next token (float64)."""
    logits = np.asarray(logits[: len(ids) - 1], dtype=np.float64)  # position i predicts ids[i+1]
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def peak_rss_mb() -> float:
    """Peak resident set of this process in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_counts(run: Run, rows: int, n: int) -> None:
    """Every engine must make exactly n new tokens per row, or the speeds are not comparable."""
    counts = [len(t) for t in run.tokens]
    if len(counts) != rows or any(c != n for c in counts):
        raise SystemExit(f"error: asked for {rows} row(s) x {n} new tokens, got {counts}")


def measure(runner: ModuleType, job: dict) -> dict:
    """Open the model, run JOB's scenario once to warm up and once timed, return the numbers."""
    model = runner.open_model(job)
    result = {"scenario": job["scenario"], "info": runner.describe(model)}
    if job["scenario"] == "ppl":
        ids = job["rows"][0]
        every = log_softmax(runner.teacher_forced_logits(model, ids), ids)  # (len-1, vocab)
        logprobs = every[np.arange(len(ids) - 1), ids[1:]]
        if logprobs.shape != (len(ids) - 1,) or not np.isfinite(logprobs).all():
            raise SystemExit(f"error: expected {len(ids) - 1} finite log-probabilities, got shape {logprobs.shape}")
        if job.get("logprobs_out"):
            np.save(job["logprobs_out"], every.astype(np.float32))
        nll = float(-logprobs.mean())
        result.update(ppl=math.exp(nll), nll=nll, tokens=len(ids))
    else:
        rows, n = job["rows"], job["new_tokens"]
        runner.generate(model, rows, n)  # warm-up: same shapes, same work
        runs = [runner.generate(model, rows, n) for _ in range(TIMED_RUNS.get(job["scenario"], 1))]
        for run in runs:
            check_counts(run, len(rows), n)
        median = lambda values: float(np.median(values))  # noqa: E731
        result.update(ttft_s=median([r.first_s for r in runs]), total_s=median([r.total_s for r in runs]),
                      first_ids=runs[0].tokens[0][:FIRST_IDS], generated=sum(map(len, runs[0].tokens)))
        if len(rows) == 1:
            result["decode_tok_s"] = median([(n - 1) / (r.total_s - r.first_s) for r in runs])
        else:
            result["aggregate_tok_s"] = median([len(rows) * n / r.total_s for r in runs])
    result["rss_peak_mb"] = peak_rss_mb()
    return result


def main(runner: ModuleType) -> None:
    """Entry point of every runner: `python RUNNER JOB.json` prints one JSON line on stdout."""
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} JOB.json")
    job = json.loads(Path(sys.argv[1]).read_text())
    if job["action"] == "prepare":
        result = {"model": runner.prepare(job)}
    elif job["action"] == "hf_folder":  # the transformers runner only
        result = {"model": runner.hf_folder(job)}
    else:
        result = measure(runner, job)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
