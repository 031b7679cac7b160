"""Prefixes kept beyond an open batch's slots: keys and values of sequences whose slot went to another row.

    pool = PrefixPool(max_bytes=256 * 2**20)
    pool.put(tokens, keys)                   # keys: past input name -> (kv_heads, len(tokens), head_size), copied
    entry, n = pool.best(ids, limit)         # the entry sharing the longest start with IDS, and how long it is
    keys = entry.keys                        # write n positions of them back into a slot (KVCache.write_prefix)

A server's slots each keep the last sequence they ran (runtime/generator.py), so a chat's next turn
reuses its prefix while its slot is free. With more conversations than slots, a slot is soon taken by
someone else; this pool keeps the prefix that was there, in host memory, so the next turn of that chat
still prefills only its new messages. It holds at most MAX_BYTES; the least recently used entry goes
first, and an entry that begins another one is dropped for the longer one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prefix:
    tokens: tuple[int, ...]
    keys: dict[str, np.ndarray]  # past input name -> (kv_heads, len(tokens), head_size)
    rotated_long: bool = False  # LongRoPE: computed by a row past the switch (its keys are rotated for long contexts)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys.values())


class PrefixPool:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()  # oldest use first
        self.bytes = 0
        self.hits = 0  # prefixes taken back into a slot

    def put(self, prefix: Prefix) -> None:
        """Keep PREFIX (the least recently used go when over budget; an entry it begins is dropped)."""
        if prefix.nbytes > self.max_bytes:
            return
        for tokens in [t for t in self._entries if prefix.tokens[:len(t)] == t or t[:len(prefix.tokens)] == prefix.tokens]:
            if len(tokens) > len(prefix.tokens):  # a longer one holds it already
                self._entries.move_to_end(tokens)
                return
            self.bytes -= self._entries.pop(tokens).nbytes
        self._entries[prefix.tokens] = prefix
        self.bytes += prefix.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes

    def best(self, ids: Sequence[int], limit: int) -> tuple[Prefix | None, int]:
        """The entry sharing the longest start with IDS (at most LIMIT tokens) and that length."""
        found, most = None, 0
        for tokens, entry in self._entries.items():
            n = common_prefix(tokens, ids, limit)
            if n > most:
                found, most = entry, n
        if found is not None:
            self._entries.move_to_end(found.tokens)
        return found, most

    def __len__(self) -> int:
        return len(self._entries)


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many first tokens A and B share, at most LIMIT."""
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n
