"""One generated row as text: detokenized as it grows, cut at the first stop string.

    row = TextRow(tokenizer, stops=("\\n\\n",))
    piece, stopped = row.feed(generator.get_new_tokens(i))   # after each step: the text now safe to show
    piece, stopped = row.finish()                            # once the row has ended: what was held back

`LanguageModel` runs one per row of a batch and a server runs one per request, so both turn ids
into text, and find stop strings, the same way. Text that could be the start of a stop string is
held back until it is clearly not one, so streamed pieces never show a stop string, even one spread
over several tokens; the text before a stop string is still shown.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

from edgelm.runtime.detokenizer import StreamingDetokenizer


class TextRow:
    def __init__(self, tokenizer: Tokenizer, stops: tuple[str, ...] = ()):
        self.detok = StreamingDetokenizer(tokenizer)
        self.stops = stops
        self.text = ""  # shown so far (a stop string and what follows it cut off)
        self.held = ""  # emitted by the detokenizer, held back: it may begin a stop string
        self.seen = 0  # generated tokens already turned into text

    def feed(self, generated: Sequence[int]) -> tuple[str, bool]:
        """Turn the ids of GENERATED (the row's whole generated list) not seen yet into text.

        Returns the new piece that is safe to show and whether a stop string appeared (then the
        row must end: the caller stops it, and later tokens are never fed).
        """
        pieces = []
        for token in generated[self.seen:]:
            self.seen += 1
            piece, stopped = self._extend(self.detok.add(token))
            pieces.append(piece)
            if stopped:
                return "".join(pieces), True
        return "".join(pieces), False

    def finish(self) -> tuple[str, bool]:
        """Once no more tokens come: any unfinished character, then what the stop check held back."""
        piece, stopped = self._extend(self.detok.finish())
        if not stopped:
            piece, self.text, self.held = piece + self.held, self.text + self.held, ""
        return piece, stopped

    def _extend(self, new_text: str) -> tuple[str, bool]:
        pending = self.held + new_text
        if not self.stops:
            self.text += pending
            return pending, False
        # a stop string not seen before must end inside PENDING: search only the tail that can hold it
        longest = max(map(len, self.stops))
        tail = self.text[-(longest - 1):] if longest > 1 else ""
        found = [at for at in ((tail + pending).find(s) for s in self.stops) if at >= 0]
        if found:
            piece = pending[:max(min(found) - len(tail), 0)]
            self.text, self.held = self.text + piece, ""
            return piece, True
        keep = max((k for s in self.stops for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
        piece = pending[:len(pending) - keep]
        self.text, self.held = self.text + piece, pending[len(pending) - keep:]
        return piece, False
