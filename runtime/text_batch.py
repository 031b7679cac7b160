"""The decoding core every caller drives: an open batch of text rows that join and leave while it decodes.

    batch = TextBatch(lm, slots=8)
    row = batch.add(ids, params, stop=("\\n\\n",))   # prefilled into a free slot (or only what its kept prefix lacks)
    for update in batch.step():                      # one token for every running row
        update.row, update.piece, update.finish_reason   # text safe to show; eos | length | context | stop at its end
    batch.text(row); batch.tokens(row); batch.finish_reason(row)   # its result, until it is released
    batch.release(row)                               # a finished or abandoned row frees its slot

`LanguageModel` (generate, stream, complete, conversations), `edgelm serve`'s decode worker and
`edgelm batch` all decode through this one loop: ids from the runtime's open batch
(`Generator.open`: per-row options and seed, prefix reuse), text and stop strings from `TextRow`.
A row's text depends only on its prompt, options and seed, never on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgelm.runtime.generator import STOP, Generator, GeneratorParams, Rule
from edgelm.runtime.sampling import TokenLogprob
from edgelm.runtime.text_row import TextRow

if TYPE_CHECKING:
    from edgelm.runtime.language_model import LanguageModel


@dataclass(frozen=True)
class Update:
    """What one step gave a row."""

    row: int
    piece: str  # new text that is safe to show (a stop string and what follows it never are)
    finish_reason: str | None = None  # eos | length | context | stop on the row's last update
    logprobs: tuple[TokenLogprob, ...] = ()  # the step's token, for a row added with logprobs


class TextBatch:
    def __init__(self, lm: "LanguageModel", slots: int, capacity: int | None = None, interleave: bool = False,
                 pool_bytes: int = 0):
        """SLOTS rows at most at once; CAPACITY: tokens a row is expected to hold (the cache grows past it).
        INTERLEAVE: a row added while others decode is prefilled in chunks between their steps (a server).
        POOL_BYTES: prefixes of slots taken by other rows kept in host memory up to this size."""
        special = lm.manifest.special_tokens
        self.lm = lm
        self.generator = Generator.open(lm.graph, lm.params(), lm.manifest.max_context, slots=slots,
                                        eos=special.eos, pad=special.pad, capacity=capacity, interleave=interleave,
                                        pool_bytes=pool_bytes)
        self._texts: dict[int, TextRow] = {}  # row -> its text, until released
        self._live: list[int] = []  # rows still running

    def add(self, ids: Sequence[int], params: GeneratorParams, stop: tuple[str, ...] = (), rule: Rule | None = None,
            logprobs: int | None = None) -> int:
        """Prefill IDS into a free slot and return its row; it gets its first token at the next step.

        RULE: what restricts its tokens (a JSON schema's: `lm.json_grammar(schema).rule()`). LOGPROBS: each
        update carries its token's log probability and that many alternatives."""
        row = self.generator.add_row(ids, params, rule, logprobs)
        self._texts[row] = self.lm.text_row(stop)
        self._live.append(row)
        return row

    def step(self) -> list[Update]:
        """One token for every running row: an Update per row that was running (pieces may be empty); a row whose
        prompt is still prefilling gets none."""
        gen = self.generator
        gen.generate_next_token()
        updates = []
        for row in list(self._live):
            if gen.is_prefilling(row):  # its prompt is still running between steps: nothing to show yet
                continue
            text = self._texts[row]
            piece, stopped = text.feed(gen.get_new_tokens(row))
            if not stopped and gen.finish_reason(row) is not None:  # its last token: any unfinished character,
                tail, stopped = text.finish()  # then what the stop check held back
                piece += tail
            if stopped:  # a stop string ended it (perhaps with eos or the length limit in the same token)
                gen.stop_row(row, STOP)
            reason = gen.finish_reason(row)
            if reason is not None:
                self._live.remove(row)
            updates.append(Update(row, piece, reason, tuple(gen.get_logprobs(row, start=-1))))
        return updates

    def release(self, row: int) -> None:
        """Free ROW's slot; its keys stay for a later prompt that starts with the same tokens."""
        self._texts.pop(row, None)
        if row in self._live:
            self._live.remove(row)
        self.generator.release_row(row)

    # -- a row's result, until it is released ---------------------------------------------------
    def text(self, row: int) -> str:
        """The text ROW has shown so far (at its end, the whole text: its pieces joined)."""
        return self._texts[row].text

    def tokens(self, row: int) -> list[int]:
        """Ids generated for ROW (an ending eos included)."""
        return self.generator.get_new_tokens(row)

    def finish_reason(self, row: int) -> str | None:
        return self.generator.finish_reason(row)

    def logprobs(self, row: int) -> list[TokenLogprob]:
        """Per generated id: its log probability and alternatives (a row added with logprobs)."""
        return self.generator.get_logprobs(row)

    @property
    def running(self) -> int:
        """Rows that get a token at the next step."""
        return len(self._live)

    @property
    def slots(self) -> int:
        return self.generator.batch
