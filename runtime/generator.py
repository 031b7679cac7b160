"""Step-wise decoding on token ids, in onnxruntime-genai's shape.

    params = GeneratorParams(max_new_tokens=32, temperature=0.7, seed=1)
    gen = Generator(graph, params, max_context=2048, eos=(2,), pad=2)
    gen.append_tokens([[1, 2, 3], [4, 5]])          # rows of any length: each prefilled into its cache slot
    while not gen.is_done():
        gen.generate_next_token()                     # one token for every unfinished row
        print(gen.get_next_tokens())                  # (batch,) ids just chosen
    gen.get_new_tokens(0); gen.finish_reason(0); gen.rewind_to(3)

    gen = Generator.open(graph, params, max_context=2048, slots=8, eos=(2,))   # rows that come and go
    row = gen.add_row([1, 2, 3], GeneratorParams(seed=7))   # prefilled into a free slot, with its own options
    gen.generate_next_token(); ...; gen.release_row(row)    # a finished or abandoned row frees its slot at once

A chosen token is fed to the graph lazily, at the start of the next step: the token that ends a
row is never run, and a caller that stops early (a stop string) wastes no forward pass. Stops
live here when they are about ids (eos, max_new_tokens, the context limit); text-level stops
(stop strings) belong to the caller, which ends a row with `stop_row`.

An open batch (`Generator.open`) is what a server's continuous batching needs: a request joins
at the next step (its prompt prefilled into a free cache slot while the others wait one step),
leaves as soon as it ends, and each row samples with its own options and seed, so a row's tokens
do not depend on what else is in the batch. A step runs the slots up to the highest one in use.

Prefix reuse: a released slot keeps its keys until another row needs the slot, and a new row whose
prompt begins with a free slot's tokens (the same chat one turn later, a shared system prompt)
takes that slot and prefills only the rest, as llama.cpp's server does per slot. The kept keys are
what a cold prefill writes, up to float rounding (as with chunked prefill), so greedy output is a
cold start's. It costs no memory beyond the batch's own cache: a prompt that matches no slot takes
the lowest free slot (overwriting what it kept), which keeps the batch narrow. A prefix that another
slot holds (a running row: the other choices of one prompt, requests that share a system prompt; or
another free slot's kept tokens) is copied into the new row's slot instead of prefilled (host
buffers; on a device the row prefills).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.chunk_sizer import ChunkSizer
from edgelm.runtime.decoder import DecoderGraph
from edgelm.runtime.kv_cache import KVCache
from edgelm.runtime.prefix_pool import Prefix, PrefixPool, common_prefix
from edgelm.runtime.sampling import (Sampler, TokenLogprob, apply_repetition_penalty, check_logprobs, check_sampling,
                                     make_sampler, token_logprob)

# Why a row finished; FREE: an open batch's slot that holds no sequence; PREFILL: a row whose prompt is still
# being prefilled, in chunks between steps (an open batch with interleave=True).
EOS, LENGTH, CONTEXT, STOP, FREE, PREFILL = "eos", "length", "context", "stop", "free", "prefill"
# A free slot's kept prefix is taken over the lowest free slot only when it saves at least this many tokens of
# prefill: a higher slot widens every step of the batch (a step runs the slots up to the highest in use).
MIN_REUSE = 64
# A prefix held by another slot (a running row, as the n choices of one prompt or requests sharing a system prompt,
# or another free slot's kept tokens) is copied into the new row's slot when it saves at least this many tokens of
# prefill beyond what the slot itself holds: copying keys costs a memcpy, computing them a forward pass.
MIN_COPY = 16
DEFAULT_MAX_NEW_TOKENS = 256  # when neither the caller nor the bundle's generation defaults say


class Rule(Protocol):
    """What a row's next token may be (runtime/json_schema.py's SchemaRule is one)."""

    def restrict(self, scores: np.ndarray) -> np.ndarray: ...  # (1, vocab) forbidden -> -inf, in place

    def consume(self, token: int) -> None: ...


class RuleSource(Protocol):
    """A compiled constraint (a JSON schema's, the tools' calls') that gives each row its own Rule."""

    def rule(self) -> Rule: ...


@dataclass(frozen=True)
class GeneratorParams:
    """How to choose tokens and when to stop. temperature 0 is greedy (argmax)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    repetition_penalty: float = 1.0  # 1 = off
    seed: int | None = None

    def __post_init__(self):
        problems = []
        if not isinstance(self.max_new_tokens, int) or isinstance(self.max_new_tokens, bool) or self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            problems.append(f"seed must be a whole number >= 0 or None, got {self.seed!r}")
        try:
            check_sampling(self.temperature, self.top_k, self.top_p, self.repetition_penalty)
        except GenerationError as e:
            problems.extend(e.problems)
        if problems:
            raise GenerationError(*problems)

    @classmethod
    def resolve(cls, defaults: dict, max_new_tokens: int | None = None, temperature: float | None = None,
                top_k: int | None = None, top_p: float | None = None, repetition_penalty: float | None = None,
                seed: int | None = None) -> "GeneratorParams":
        """The options given, every unset one taken from DEFAULTS (a bundle's generation defaults).

        As in transformers: greedy unless the bundle says do_sample (or a temperature > 0 is
        given); when sampling, top_k defaults to 50.
        """
        if temperature is None:
            temperature = float(defaults.get("temperature", 1.0)) if defaults.get("do_sample") else 0.0
        return cls(
            max_new_tokens=max_new_tokens if max_new_tokens is not None else int(defaults.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
            temperature=temperature,
            top_k=top_k if top_k is not None else (int(defaults.get("top_k", 50)) if temperature else 0),
            top_p=top_p if top_p is not None else float(defaults.get("top_p", 1.0)),
            repetition_penalty=repetition_penalty if repetition_penalty is not None else float(defaults.get("repetition_penalty", 1.0)),
            seed=seed,
        )

    @property
    def seeded_sampling(self) -> bool:
        """Draws that a seed makes repeatable (greedy ignores the seed)."""
        return self.seed is not None and self.temperature > 0


# The generation options' names, as every front end (Python, CLI, server, batch) takes them.
OPTION_NAMES = tuple(GeneratorParams.__dataclass_fields__)


def newest_tokens(ids: list[int], max_context: int, max_new_tokens: int) -> list[int]:
    """A prompt too long for the context cut to its newest tokens, leaving room for MAX_NEW_TOKENS (at least one)."""
    return ids[-max(max_context - max_new_tokens, 1):]


class Generator:
    """Owns one batch of sequences (a row per cache slot), their KV cache and their stop state."""

    def __init__(self, graph: DecoderGraph, params: GeneratorParams, max_context: int,
                 eos: tuple[int, ...] = (), pad: int | None = None):
        self.graph = graph
        self.params = params
        self.max_context = max_context
        self.eos = frozenset(eos)
        self.pad = pad if pad is not None else (min(eos) if eos else 0)
        self._own: dict[int, tuple[GeneratorParams, Sampler]] = {}  # row -> its options and its own seeded sampler
        self._rules: dict[int, Rule] = {}  # row -> what restricts its next token (a JSON schema), if anything
        self._logprobs: dict[int, tuple[int, list[TokenLogprob]]] = {}  # row -> (alternatives asked, per new token)
        self._open = False  # an open batch (Generator.open): its free slots have the reason FREE
        self._cache: KVCache | None = None
        self._rows: list[list[int]] = []  # real tokens of each row: prompt + generated
        self._prompt_lengths: list[int] = []
        self._reasons: list[str | None] = []
        self._logits: np.ndarray | None = None  # (batch, vocab) for the next choice
        self._pending: np.ndarray | None = None  # (batch,) chosen, not yet fed to the graph
        self._filler = np.zeros(0, dtype=bool)  # (batch,) pending entries that are pad for finished rows
        self._kept: dict[int, list[int]] = {}  # open batch: free slot -> the tokens its cache still holds
        self.pool: PrefixPool | None = None  # open(pool_bytes=...): prefixes kept beyond the slots
        self.prefix_hits = 0  # rows that reused a kept prefix, and the prompt tokens they did not prefill
        self.reused_tokens = 0
        self._interleave = False  # open(interleave=True): prompts that arrive while rows decode prefill in chunks
        self._queue: list[int] = []  # rows prefilling, first come first served
        self._todo: dict[int, list[int]] = {}  # row -> prompt ids not run yet
        self._sizer = ChunkSizer()  # measures steps and prefill, sizes the chunks (runtime/chunk_sizer.py)

    # -- feeding ---------------------------------------------------------------------------
    def append_tokens(self, tokens: Sequence[int] | Sequence[Sequence[int]]) -> None:
        """Run TOKENS (one row of ids, or one list per row) after what the batch holds.

        The first call fixes the batch size. Each row is prefilled on its own into its cache
        slot, so rows of any lengths need no padding. Appending to a finished generator
        continues it (a chat's next turn): every row is live again.
        """
        if self._open:
            raise GenerationError("append_tokens works on a fixed batch; an open batch takes rows with add_row")
        rows = _as_rows(tokens)
        self._check_ids(rows, "append_tokens")
        if self._cache is not None and len(rows) != self.batch:
            raise GenerationError(f"append_tokens got {len(rows)} rows for a batch of {self.batch}; pass one list per row")
        held = self._rows or [[] for _ in rows]
        longest = max(len(h) + len(new) for h, new in zip(held, rows))
        if longest >= self.max_context:  # the next token would not fit: a row may hold at most max_context
            raise GenerationError(
                f"a sequence would hold {longest} tokens, leaving no room under the model's limit of {self.max_context}; "
                "shorten the prompt or let it be truncated (truncate_prompt=True)"
            )
        if self._cache is None:
            room = min(longest + self.params.max_new_tokens, self.max_context)
            self._cache = self.graph.new_cache(slots=len(rows), capacity=room)
            self._rows = [[] for _ in rows]
            self._own = {i: (self.params, _sampler(self.params)) for i in range(len(rows))}  # a row's draws are its own
        if self._pending is not None:  # the last chosen real tokens were never fed: they go first
            for i in np.flatnonzero(~self._filler):
                rows[i] = [self._rows[i].pop()] + rows[i]
            self._pending = None
        logits = []
        for i, row in enumerate(rows):  # one prefill per row, into its own slot
            logits.append(self.graph.extend(self._cache, i, row)[-1])  # (vocab,) after the row's last token
            self._rows[i].extend(row)
        self._logits = np.stack(logits)  # (batch, vocab)
        self._prompt_lengths = [len(r) for r in self._rows]
        self._reasons = [None] * self.batch

    @classmethod
    def open(cls, graph: DecoderGraph, params: GeneratorParams, max_context: int, slots: int,
             eos: tuple[int, ...] = (), pad: int | None = None, capacity: int | None = None,
             interleave: bool = False, pool_bytes: int = 0) -> "Generator":
        """An empty batch of SLOTS rows that sequences join (`add_row`) and leave (`release_row`) while it decodes.

        CAPACITY: tokens a row is expected to hold (room is made for it at once; the cache grows past it).
        INTERLEAVE: a row added while others decode is prefilled in chunks between steps (a server: running
        streams keep receiving tokens); otherwise add_row prefills it at once. POOL_BYTES: keep the prefixes of
        slots taken by other rows in host memory up to this many bytes (runtime/prefix_pool.py)."""
        gen = cls(graph, params, max_context, eos, pad)
        gen._interleave = interleave
        gen._cache = graph.new_cache(slots=slots, **({"capacity": min(capacity, max_context)} if capacity else {}))
        gen._rows = [[] for _ in range(slots)]
        gen._prompt_lengths = [0] * slots
        gen._reasons = [FREE] * slots
        gen._open = True
        gen.pool = PrefixPool(pool_bytes) if pool_bytes and gen._cache.can_copy else None
        gen._logits = np.zeros((slots, graph.vocab_size), dtype=np.float32)
        return gen

    def add_row(self, tokens: Sequence[int], params: GeneratorParams | None = None, rule: Rule | None = None,
                logprobs: int | None = None) -> int:
        """Prefill TOKENS into a free slot of an open batch and return its row; it gets a token at the next step.

        PARAMS (default: the generator's) are this row's own: its sampler and seed are not shared.
        RULE (a JSON schema's, runtime/json_schema.py) restricts each of its tokens to those it allows.
        LOGPROBS: record each new token's log probability and that many most likely alternatives (`get_logprobs`).
        """
        check_logprobs(logprobs)
        free = [i for i, reason in enumerate(self._reasons) if reason == FREE]
        if not free:
            raise GenerationError(f"every one of the {self.batch} slots holds a sequence; release_row one first"
                                  if self._open else "add_row needs an open batch (Generator.open)")
        rows = _as_rows(tokens)
        if len(rows) != 1:
            raise GenerationError(f"add_row takes one row of token ids, got {len(rows)} rows")
        ids = rows[0]
        self._check_ids(rows, "add_row")
        if len(ids) >= self.max_context:
            raise GenerationError(f"a prompt of {len(ids)} tokens leaves no room under the model's limit of "
                                  f"{self.max_context}; shorten it")
        row, reuse = self._slot_for(ids, free)
        source, copied = self._copy_source(ids, row, reuse)
        pooled, restored = self.pool.best(ids, len(ids) - 1) if self.pool is not None else (None, 0)
        if self.pool is not None and len(self._kept.get(row, ())) >= MIN_REUSE and reuse < len(self._kept[row]):
            self._save_kept(row)  # what the slot holds would be lost: keep it in the pool
        params = params or self.params
        if pooled is not None and restored >= max(reuse, copied) + MIN_COPY:
            self._cache.write_prefix(row, pooled.keys, ids[:restored], pooled.rotated_long)
            reuse = restored
            self.pool.hits += 1
        elif source is not None:
            self._cache.copy_prefix(source, row, copied)
            reuse = copied
        elif reuse:
            self._cache.trim(row, reuse)
        else:
            self._cache.clear(row)
        if reuse:
            self.prefix_hits, self.reused_tokens = self.prefix_hits + 1, self.reused_tokens + reuse
        self._kept.pop(row, None)
        self._rows[row], self._prompt_lengths[row] = list(ids), len(ids)
        if self._interleave and (self.running() or self._queue):  # others decode: run it between their steps
            self._reasons[row], self._todo[row] = PREFILL, ids[reuse:]
            self._queue.append(row)
            self._cache.reserve(min(len(ids) + params.max_new_tokens, self.max_context))  # one growth, not one per chunk
        else:
            self._logits[row] = self._prefill(row, ids[reuse:])  # (vocab,) after the prompt
            self._reasons[row] = None
        self._own[row] = (params, _sampler(params))
        if rule is not None:
            self._rules[row] = rule
        if logprobs is not None:
            self._logprobs[row] = (logprobs, [])
        if self._pending is not None and row < len(self._pending):
            self._filler[row] = True  # nothing of this row waits to be fed
        return row

    def _slot_for(self, ids: list[int], free: list[int]) -> tuple[int, int]:
        """The free slot for a new row of IDS and how many of its first tokens that slot's cache already holds."""
        reuse = {i: common_prefix(self._kept.get(i, ()), ids, len(ids) - 1) for i in free}  # one token must run
        best = max(free, key=lambda i: (reuse[i], -i))
        row = best if reuse[best] >= MIN_REUSE else free[0]
        return row, reuse[row]

    def _save_kept(self, row: int) -> None:
        tokens = self._kept[row]
        keys = self._cache.read_prefix(row, len(tokens))
        self.pool.put(Prefix(tuple(tokens), keys, self._cache.rotated_long(row)))

    def _copy_source(self, ids: list[int], row: int, reuse: int) -> tuple[int | None, int]:
        """Another slot holding a longer prefix of IDS than ROW's own REUSE tokens, and how many it holds."""
        if not self._cache.can_copy:
            return None, reuse
        held = {i: self._rows[i][:int(self._cache.lengths[i])] for i, r in enumerate(self._reasons) if r != FREE}
        held.update((i, kept) for i, kept in self._kept.items() if i != row)
        best, most = None, reuse
        for i, tokens in held.items():
            n = common_prefix(tokens, ids, len(ids) - 1)  # one token must run
            if n >= most + MIN_COPY:
                best, most = i, n
        return best, most

    def release_row(self, row: int) -> None:
        """Free ROW's slot (its sequence finished, or its caller went away).

        The slot's cache keeps the row's keys, for a later row that starts with the same tokens."""
        if not self._open:
            raise GenerationError("release_row works on an open batch (Generator.open)")
        self._check_row(row, "release_row")
        held = min(int(self._cache.lengths[row]), self._cache.max_positions - 1)  # a free slot's filler writes past it
        self._cache.trim(row, held)
        self._kept[row] = self._rows[row][:held]
        if row in self._todo:  # abandoned while its prompt was prefilling
            self._queue.remove(row)
            del self._todo[row]
        self._reasons[row] = FREE
        self._rows[row], self._prompt_lengths[row] = [], 0
        self._own.pop(row, None)
        self._rules.pop(row, None)
        self._logprobs.pop(row, None)
        if self._pending is not None and row < len(self._pending):
            self._filler[row] = True

    def running(self) -> list[int]:
        """Rows that will get a token at the next step."""
        return [i for i, reason in enumerate(self._reasons) if reason is None]

    def _check_row(self, row: int, caller: str) -> None:
        if not self._rows:
            raise GenerationError(f"{caller}: the generator holds no rows yet; call append_tokens first")
        if not isinstance(row, (int, np.integer)) or isinstance(row, bool) or not 0 <= row < self.batch:
            raise GenerationError(f"{caller} needs a row in 0..{self.batch - 1}, got {row!r}")

    def _check_ids(self, rows: list[list[int]], caller: str) -> None:
        vocab = self.graph.vocab_size
        if any(t >= vocab for row in rows for t in row):
            raise GenerationError(f"{caller} got a token id >= the vocabulary size {vocab}; encode with the bundle's tokenizer")

    def _prefill(self, row: int, ids: list[int]) -> np.ndarray:
        """Run IDS after what ROW holds; (vocab,) logits after the last. Measures the prefill speed."""
        start, depth = time.perf_counter(), int(self._cache.lengths[row])
        logits = self.graph.extend(self._cache, row, ids)[-1]
        self._sizer.prefilled(len(ids), depth, time.perf_counter() - start)
        return logits

    def _advance_prefill(self) -> None:
        """Prefill queued prompts: one chunk's worth while rows decode, else the first prompt whole."""
        if not self._queue:
            return
        depth = int(self._cache.lengths[self._queue[0]])
        budget = self._sizer.tokens(depth) if self.running() else None  # nobody waits on a step: no need to yield
        while self._queue and (budget is None or budget > 0):
            row = self._queue[0]
            todo = self._todo[row]
            take = todo if budget is None else todo[:budget]
            logits = self._prefill(row, take)
            del todo[:len(take)]
            if budget is not None:
                budget -= len(take)
            if not todo:  # its prompt is in the cache: it gets a token at this step
                self._queue.pop(0)
                del self._todo[row]
                self._logits[row], self._reasons[row] = logits, None
                if budget is None:
                    return

    def _feed_pending(self) -> None:
        """Run the tokens chosen last step; finished rows are fed pad and keep their length.

        Only the slots up to the last one that held a row at that step run; rows added since
        keep the logits of their prefill.
        """
        live = ~self._filler  # (width,)
        if live.any():
            stepped = self.graph.step(self._cache, self._pending, live=live)  # (width, vocab)
            self._logits[:len(live)][live] = stepped[live]
        self._pending = None

    # -- choosing --------------------------------------------------------------------------
    def generate_next_token(self) -> None:
        """Choose one token for every unfinished row, and mark the rows this finishes."""
        if self._cache is None:
            raise GenerationError("call append_tokens with the prompt before generate_next_token")
        if self.is_done():
            raise GenerationError("every row has finished; append_tokens to continue, or start a new generator")
        self._advance_prefill()
        start, stepped = time.perf_counter(), self._pending is not None
        if stepped:
            self._feed_pending()
        # the slots up to the last one in use; a prompt still prefilling past them does not widen the step (a filler
        # row's attention would read its whole prompt)
        width = 1 + max((i for i, reason in enumerate(self._reasons) if reason not in (FREE, PREFILL)), default=0)
        chosen = self._choose(width)
        self._filler = np.asarray([r is not None for r in self._reasons[:width]], dtype=bool)
        chosen[self._filler] = self.pad
        for i in np.flatnonzero(~self._filler):
            self._rows[i].append(int(chosen[i]))
            self._reasons[i] = self._stop_reason(i, int(chosen[i]))
        self._pending = chosen
        if stepped:  # what a running row waits for between two tokens, apart from prefill
            self._sizer.stepped(time.perf_counter() - start, prompt_waiting=bool(self._queue))

    def _choose(self, width: int) -> np.ndarray:
        """(width,) ids: every running row draws with its own options and sampler, so with a seed its tokens are
        those it gets alone; greedy rows without a penalty or a rule take one batched argmax."""
        chosen = np.full(width, self.pad, dtype=np.int64)
        running = [i for i in range(width) if self._reasons[i] is None]
        plain = [i for i in running if _is_plain_greedy(self._own[i][0]) and i not in self._rules]
        if plain:
            chosen[plain] = np.argmax(self._logits[plain], axis=-1)
        for i in (i for i in running if i not in plain):
            (params, sample), rule = self._own[i], self._rules.get(i)
            scores = apply_repetition_penalty(self._logits[i:i + 1], [self._rows[i]], params.repetition_penalty)
            if rule is not None:
                scores = rule.restrict(scores.copy())  # (1, vocab); the raw logits stay what get_logits shows
            chosen[i] = sample(scores)[0]
            if rule is not None and int(chosen[i]) not in self.eos:
                rule.consume(int(chosen[i]))
        for i, (top, recorded) in self._logprobs.items():
            if i < width and self._reasons[i] is None:
                recorded.append(token_logprob(self._logits[i], int(chosen[i]), top))
        return chosen

    def _stop_reason(self, row: int, token: int | None) -> str | None:
        """Why ROW ends after TOKEN was added (None: it goes on); TOKEN None: only the length limits."""
        if token is not None and token in self.eos:
            return EOS
        params = self._own[row][0]
        if len(self._rows[row]) - self._prompt_lengths[row] >= params.max_new_tokens:
            return LENGTH
        if len(self._rows[row]) >= self.max_context:  # the sequence is full: its last token is never fed
            return CONTEXT
        return None

    def stop_row(self, row: int, reason: str = STOP) -> None:
        """End ROW now (the caller saw a stop string); its later tokens are ignored.

        A row that had already ended (its last token brought eos or the length limit along with
        the stop string) takes REASON too: what the caller saw is why its text ends.
        """
        self._check_row(row, "stop_row")
        if self._reasons[row] == PREFILL:
            self._queue.remove(row)
            del self._todo[row]
        if self._reasons[row] != FREE:
            self._reasons[row] = reason

    # -- reading ---------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return len(self._rows)

    def is_done(self) -> bool:
        return self._cache is not None and all(r not in (None, PREFILL) for r in self._reasons)

    def is_row_done(self, row: int) -> bool:
        self._check_row(row, "is_row_done")
        return self._reasons[row] not in (None, PREFILL)

    def is_prefilling(self, row: int) -> bool:
        """ROW's prompt is still being prefilled (interleaved with the others' steps): no token yet."""
        self._check_row(row, "is_prefilling")
        return self._reasons[row] == PREFILL

    def get_next_tokens(self) -> np.ndarray:
        """(batch,) ids chosen by the last step (pad for rows that had already finished)."""
        if self._pending is None:
            raise GenerationError("no token chosen yet; call generate_next_token first")
        return self._pending.copy()

    def get_logits(self) -> np.ndarray:
        """(batch, vocab) float32: the raw logits the last generate_next_token chose from.

        Before the first step, those after the prompt (what the first step will choose from).
        Rows that had already finished keep the values of their last step.
        """
        if self._logits is None:
            raise GenerationError("no logits yet; call append_tokens with the prompt first")
        return self._logits[:self.batch].copy()

    def get_sequence(self, row: int) -> list[int]:
        """Prompt and generated ids of ROW, without padding (an ending eos included)."""
        self._check_row(row, "get_sequence")
        return list(self._rows[row])

    def get_new_tokens(self, row: int) -> list[int]:
        """Ids generated for ROW since the last append_tokens."""
        self._check_row(row, "get_new_tokens")
        return self._rows[row][self._prompt_lengths[row]:]

    def get_logprobs(self, row: int, start: int = 0) -> list[TokenLogprob]:
        """Per id of get_new_tokens(ROW)[START:]: its log probability and the most likely alternatives (a row added
        with logprobs; otherwise empty)."""
        self._check_row(row, "get_logprobs")
        return self._logprobs.get(row, (0, []))[1][start:]

    def finish_reason(self, row: int) -> str | None:
        """eos, length, context or stop; None while the row is running (or prefilling)."""
        self._check_row(row, "finish_reason")
        return None if self._reasons[row] == PREFILL else self._reasons[row]

    # -- rewinding -------------------------------------------------------------------------
    def rewind_to(self, length: int) -> None:
        """Keep the first LENGTH tokens of the (single) row and continue from there.

        If what is kept already reaches a limit (max_new_tokens, the context, an ending eos), the
        row stays finished with that reason.
        """
        if self.batch != 1:
            raise GenerationError(f"rewind_to works on a batch of one; this generator holds {self.batch} rows")
        row = self._rows[0]
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= len(row):
            raise GenerationError(f"rewind_to needs a length in 1..{len(row)}, got {length!r}")
        self._cache.trim(0, length - 1)  # the cache holds every token but the pending one
        del row[length:]
        self._pending = np.asarray([row[-1]], dtype=np.int64)  # re-fed at the next step
        self._filler = np.zeros(1, dtype=bool)
        self._prompt_lengths = [min(self._prompt_lengths[0], length)]
        generated_last = length > self._prompt_lengths[0]  # the kept last token was chosen, not prompted
        self._reasons = [self._stop_reason(0, row[-1] if generated_last else None)]  # at a limit, it stays ended


def greedy_continuation(graph: DecoderGraph, prompt_ids: list[int], max_new_tokens: int,
                        stop_ids: tuple[int, ...] = ()) -> list[int]:
    """Argmax ids after PROMPT_IDS, an ending stop id included: a Generator run to its end (parity checks use it)."""
    gen = Generator(graph, GeneratorParams(max_new_tokens=max_new_tokens), graph.manifest.max_context, eos=stop_ids)
    gen.append_tokens(prompt_ids)
    while not gen.is_done():
        gen.generate_next_token()
    return gen.get_new_tokens(0)


def _as_rows(tokens: Sequence[int] | Sequence[Sequence[int]]) -> list[list[int]]:
    """One row of ids, or one list per row -> list of rows; every row non-empty whole numbers."""
    if isinstance(tokens, np.ndarray):
        tokens = tokens.tolist()
    if not isinstance(tokens, (list, tuple)) or not tokens:
        raise GenerationError(f"append_tokens needs a non-empty list of token ids, got {tokens!r:.60}")
    rows = [list(tokens)] if all(_is_id(t) for t in tokens) else [list(r) if isinstance(r, (list, tuple, np.ndarray)) else r for r in tokens]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row or not all(_is_id(t) for t in row):
            raise GenerationError(f"row {i} of append_tokens is not a non-empty list of token ids")
    return [[int(t) for t in row] for row in rows]


def _sampler(params: GeneratorParams) -> Sampler:
    return make_sampler(params.temperature, params.top_k, params.top_p, params.seed)


def _is_plain_greedy(params: GeneratorParams) -> bool:
    return params.temperature == 0 and params.repetition_penalty == 1.0


def _is_id(t) -> bool:
    return isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 0
