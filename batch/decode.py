"""Generate a batch of rows, each sampling with its own seed, so a row's text does not depend on its batch.

`LanguageModel.complete` samples a whole batch from one seeded generator: a row's tokens then
depend on which rows share its batch, which a resumed run or another batch size changes. Here
each row joins the runtime's open batch (`Generator.open`) with its own options, and with a
seed its seed is the run's seed plus its row id: row i with --seed S gives exactly what
`lm.generate(text_i, seed=S + i)` gives, in any batch. Greedy rows take the shared options;
their tokens equal `lm.complete`'s (each row is prefilled on its own in both). Text and stop
strings are the runtime's TextRow, as in `LanguageModel` and the server.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from edgelm.runtime.generator import STOP, Generator, GeneratorParams
from edgelm.runtime.language_model import LanguageModel


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
                  cancelled: threading.Event | None = None) -> list[Generated]:
    """Decode PROMPTS (token ids) as one open batch; a seeded sampling run seeds row i with seed + ROW_IDS[i].

    CANCELLED, once set, raises Cancelled before the next token."""
    special = lm.manifest.special_tokens
    gen = Generator.open(lm.graph, params, lm.manifest.max_context, slots=len(prompts), eos=special.eos, pad=special.pad)
    seeded = params.seed is not None and params.temperature > 0
    for i, ids in enumerate(prompts):
        gen.add_row(ids, replace(params, seed=params.seed + int(row_ids[i])) if seeded else None)
    rows = [lm.text_row(stop) for _ in prompts]
    while not gen.is_done():
        if cancelled is not None and cancelled.is_set():
            raise Cancelled("interrupted")
        gen.generate_next_token()
        for i, row in enumerate(rows):
            if gen.finish_reason(i) == STOP:
                continue
            _, stopped = row.feed(gen.get_new_tokens(i))
            if stopped:  # a stop string ended this row
                gen.stop_row(i)
    for i, row in enumerate(rows):
        if gen.finish_reason(i) != STOP:  # any unfinished character, then what the stop check held back
            _, stopped = row.finish()
            if stopped:
                gen.stop_row(i)
    return [Generated(row.text, gen.finish_reason(i), len(prompts[i]), len(gen.get_new_tokens(i)))
            for i, row in enumerate(rows)]
