"""Generate a batch of rows, each sampling with its own seed, so a row's text does not depend on its batch.

The rows decode through the runtime's TextBatch (the loop LanguageModel and the server drive), each
with its own options. A seeded sampling run seeds row i with the run's seed plus its row id: row i
with --seed S gives exactly what `lm.generate(text_i, seed=S + i)` gives, in any batch (one seed for
every row would give equal texts the same sample, which a dataset of repeated prompts does not want).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgelm.runtime.generator import GeneratorParams
from edgelm.runtime.json_schema import SchemaGrammar
from edgelm.runtime.language_model import LanguageModel
from edgelm.runtime.text_batch import TextBatch


@dataclass
class Generated:
    text: str
    finish_reason: str  # eos | length | context | stop
    prompt_tokens: int
    completion_tokens: int


class Cancelled(Exception):
    """The run was interrupted while this batch was decoding (its rows are not saved)."""


def generate_rows(lm: LanguageModel, prompts: Sequence[list[int]], row_ids: Sequence[int] | None,
                  params: GeneratorParams, stop: tuple[str, ...],
                  cancelled: threading.Event | None = None, grammar: SchemaGrammar | None = None) -> list[Generated]:
    """Decode PROMPTS (token ids) as one batch; a seeded sampling run seeds row i with seed + ROW_IDS[i].

    CANCELLED, once set, raises Cancelled before the next token. GRAMMAR: every row follows this JSON schema."""
    batch = TextBatch(lm, slots=len(prompts), capacity=max(map(len, prompts)) + params.max_new_tokens)
    rows = [batch.add(ids, replace(params, seed=params.seed + int(row_ids[i])) if params.seeded_sampling else params, stop,
                      grammar.rule() if grammar else None)
            for i, ids in enumerate(prompts)]
    while batch.running:
        if cancelled is not None and cancelled.is_set():
            raise Cancelled("interrupted")
        batch.step()
    return [Generated(batch.text(r), batch.finish_reason(r), len(ids), len(batch.tokens(r))) for r, ids in zip(rows, prompts)]
