"""Apply a bundle to one window of rows: the text column in, result columns and `error` out.

One function per task, shared by the local runner and the Ray actors, so both give the same
rows. A window is a pyarrow Table (plan.py); rows that are bad (checks.py) get null results and
their reason in `error`, the others run through the runtime:

    embed     one Encoder.embed(texts, batch_size)             -> embedding (list of float32)
    classify  one Encoder.classify(texts, top_k=1, batch_size) -> label (string), score (float64)
    generate  the runtime's open batch (decode.py), batch_size -> generated_text, finish_reason,
              rows at a time                                      prompt_tokens, completion_tokens
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from edgelm.batch import checks
from edgelm.batch.formats import BAD_TYPE, BatchError

ROW_ID = "__row_id"  # the input row's position in INPUT (see parts.py); kept in parts, dropped from OUTPUT
ERROR = "error"
TASK_OF_BUNDLE = {"feature-extraction": "embed", "text-classification": "classify", "text-generation": "generate"}
TASKS = tuple(TASK_OF_BUNDLE.values())
RESULTS = {  # the columns each task adds, before `error`
    "embed": {"embedding": pa.list_(pa.float32())},
    "classify": {"label": pa.string(), "score": pa.float64()},
    "generate": {"generated_text": pa.string(), "finish_reason": pa.string(),
                 "prompt_tokens": pa.int64(), "completion_tokens": pa.int64()},
}


@dataclass(frozen=True)
class Job:
    """What to compute for each row; the same on the driver and in every actor."""

    task: str
    column: str = "text"
    batch_size: int = 32
    truncate: bool = False  # cut over-long texts instead of recording them as bad rows
    chat: bool = False  # generate: wrap each text as a user message in the chat template
    stop: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)  # generate: max_new_tokens, temperature, ... seed
    seeded: bool = False  # generate: samples with a seed (each row then seeds with seed + its ROW_ID)

    @property
    def added_columns(self) -> tuple[str, ...]:
        return (*RESULTS[self.task], ERROR)

    def schema(self) -> dict[str, pa.DataType]:
        return {**RESULTS[self.task], ERROR: pa.string()}


def choose_task(bundle_task: str, asked: str | None, bundle: str) -> str:
    """ASKED, or the task BUNDLE's manifest serves; one line when the bundle cannot do it."""
    serves = TASK_OF_BUNDLE.get(bundle_task)
    if serves is None:
        raise BatchError(f"{bundle} is a {bundle_task} bundle; edgelm batch runs feature-extraction (embed), "
                         "text-classification (classify) and text-generation (generate) bundles")
    if asked is not None and asked != serves:
        raise BatchError(f"--task {asked} needs a {_bundle_task_for(asked)} bundle, but {bundle} is a {bundle_task} "
                         f"bundle; use --task {serves} or a bundle exported for {asked}")
    return serves


def _bundle_task_for(task: str) -> str:
    return next(k for k, v in TASK_OF_BUNDLE.items() if v == task)


def check_columns(columns: list[str], job: Job, source: str, row_ids_given: bool = False) -> None:
    """SOURCE must hold the text column and none of the columns the run adds (nor ROW_ID unless ROW_IDS_GIVEN)."""
    if job.column not in columns:
        shown = ", ".join(c for c in columns if c != BAD_TYPE) or "none"
        raise BatchError(f"{source} has no column {job.column!r} (its columns: {shown}); pass --column NAME")
    clash = [c for c in (*job.added_columns, *(() if row_ids_given else (ROW_ID,))) if c in columns]
    if clash:
        raise BatchError(f"{source} already has a column named {', '.join(map(repr, clash))}, which edgelm batch "
                         f"writes ({', '.join(job.added_columns)}); rename it in the input")


# -- one batch ---------------------------------------------------------------------------------------
def apply(front_end, table: pa.Table, job: Job, cancelled: threading.Event | None = None) -> pa.Table:
    """TABLE (a window) with the task's result columns and `error` appended (and the JSONL type marks dropped).

    CANCELLED, once set, ends a generation window at its next token (decode.Cancelled): an interrupted
    local run does not wait for the windows its workers were decoding."""
    texts, problems = checks.texts_and_problems(table, job.column)
    row_ids = table.column(ROW_ID).to_pylist() if ROW_ID in table.column_names else None
    good = [i for i, p in enumerate(problems) if p is None]
    values: dict[str, list] = {name: [None] * table.num_rows for name in RESULTS[job.task]}
    if good:
        run = {"embed": _embed, "classify": _classify, "generate": _generate}[job.task]
        results = run(front_end, [texts[i] for i in good], [row_ids[i] for i in good] if row_ids else None, job,
                      cancelled)
        for i, result in zip(good, results):
            if isinstance(result, str):  # found only by the bundle's tokenizer: too long
                problems[i] = result
            else:
                for name, value in zip(values, result):
                    values[name][i] = value
    if BAD_TYPE in table.column_names:
        table = table.drop_columns([BAD_TYPE])
    for name, kind in job.schema().items():
        column = _vectors(values[name]) if name == "embedding" else pa.array(values[name] if name != ERROR else problems, kind)
        table = table.append_column(pa.field(name, kind), column)
    return table


def _vectors(rows: list[np.ndarray | None]) -> pa.Array:
    """list<float32> from per-row vectors (None for a bad row), without a Python loop over floats."""
    lengths = np.array([0 if r is None else len(r) for r in rows], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    present = [r for r in rows if r is not None]
    flat = np.concatenate(present).astype(np.float32, copy=False) if present else np.zeros(0, np.float32)
    mask = pa.array([r is None for r in rows])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()), mask=mask)


def _fitting(counts: list[int], limit: int, job: Job) -> list[str | None]:
    """Per text: the too-long reason, or None when it fits (or the run truncates)."""
    return [None if job.truncate or n <= limit else checks.too_long(n, limit) for n in counts]


@contextmanager
def quiet_cuts(job: Job):
    """With --truncate-prompt the runtime's 'N texts were truncated' warning is what was asked for: not shown per batch."""
    with warnings.catch_warnings():
        if job.truncate:
            warnings.simplefilter("ignore", UserWarning)
        yield


def _embed(encoder, texts: list[str], row_ids, job: Job, cancelled=None) -> list:
    return _encoder_rows(encoder, texts, job, lambda fitting: [
        (vector,) for vector in encoder.embed(fitting, batch_size=job.batch_size)])  # (dim,) each


def _classify(encoder, texts: list[str], row_ids, job: Job, cancelled=None) -> list:
    return _encoder_rows(encoder, texts, job, lambda fitting: [
        (best[0]["label"], best[0]["score"]) for best in encoder.classify(fitting, top_k=1, batch_size=job.batch_size)])


def _encoder_rows(encoder, texts: list[str], job: Job, compute) -> list:
    """Per text, COMPUTE's result for it (COMPUTE gets every text that fits the model, in order), or why it does not fit."""
    problems = _fitting(encoder.count_tokens(texts), encoder.manifest.max_context, job)
    keep = [i for i, p in enumerate(problems) if p is None]
    results: list = list(problems)
    if keep:
        with quiet_cuts(job):
            for i, row in zip(keep, compute([texts[i] for i in keep])):
                results[i] = row
    return results


def _generate(lm, texts: list[str], row_ids, job: Job, cancelled: threading.Event | None = None) -> list:
    from edgelm.batch.decode import generate_rows
    from edgelm.errors import GenerationError
    from edgelm.runtime.generator import newest_tokens

    from edgelm.batch import sampling

    params = lm.params(**sampling(job.options))
    schema = job.options.get("json_schema")
    grammar = lm.json_grammar(schema) if schema is not None else None  # compiled once for the batch's rows
    if params.seeded_sampling and row_ids is None:
        raise BatchError(f"sampling with a seed seeds each row with seed + its {ROW_ID}; the rows have no {ROW_ID} "
                         "column: add one (the row's position), or leave seed out")
    limit = lm.manifest.max_context
    results: list = [None] * len(texts)
    prompts, keep = [], []
    for i, text in enumerate(texts):
        try:
            ids = lm.encode(text, chat=job.chat)
        except GenerationError as e:  # e.g. the chat template refuses the message
            results[i] = str(e)
            continue
        if len(ids) >= limit:  # the runtime needs room for one token
            if not job.truncate:
                results[i] = checks.prompt_too_long(len(ids), limit)
                continue
            ids = newest_tokens(ids, limit, params.max_new_tokens)  # as LanguageModel's truncate_prompt
        prompts.append(ids)
        keep.append(i)
    for start in range(0, len(keep), job.batch_size):  # consecutive batches: a row's tokens do not depend on its batch
        rows = keep[start:start + job.batch_size]
        ids = [row_ids[i] for i in rows] if row_ids else None
        done = generate_rows(lm, prompts[start:start + job.batch_size], ids, params, job.stop, cancelled, grammar)
        for i, g in zip(rows, done):
            results[i] = (g.text, g.finish_reason, g.prompt_tokens, g.completion_tokens)
    return results
