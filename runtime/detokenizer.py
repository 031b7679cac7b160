"""Streaming detokenization: text pieces whose concatenation equals decoding all tokens at once.

A character can span several byte-level tokens (Chinese, emoji): decoding a prefix then ends in
U+FFFD. The streamer holds such a tail back until the character completes, and only ever emits
text that extends what it emitted before; `finish` emits whatever remains.
"""

from __future__ import annotations

from tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"


class StreamingDetokenizer:
    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._emitted = ""

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return self._emitted

    def add(self, token_id: int) -> str:
        """Append one token; return the new piece of text ('' while a character is incomplete)."""
        self._ids.append(int(token_id))
        decoded = self._tokenizer.decode(self._ids, skip_special_tokens=self._skip)
        if decoded.endswith(_INCOMPLETE) or not decoded.startswith(self._emitted):
            return ""
        return self._advance(decoded)

    def finish(self) -> str:
        """The rest of the text once no more tokens will come."""
        decoded = self._tokenizer.decode(self._ids, skip_special_tokens=self._skip)
        if not decoded.startswith(self._emitted):  # only a decoder that rewrites earlier text gets here
            raise RuntimeError("tokenizer decoding is not prefix-stable; cannot stream it")
        return self._advance(decoded)

    def _advance(self, decoded: str) -> str:
        piece = decoded[len(self._emitted):]
        self._emitted = decoded
        return piece
