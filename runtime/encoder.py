"""Run an encoder bundle: sentence embeddings, text and token classification, fill-mask, reranking.

Contract (docs/bundle-format.md, "Running an encoder"): each text (or a reranker's (query,
document) pair) is encoded once with special tokens and truncated to `max_context` (one
UserWarning per call says how many were); texts are sorted by length and run in batches padded on
the right with `special_tokens.pad`; every name in the manifest's graph inputs is fed as int64
(`token_type_ids` as zeros, or a pair's type ids; `prompt_length` as the prompt's token count,
runtime/prompts.py). Results come back in the caller's order, unpadded. Pooling and normalisation
live inside the graph, so `embed` only reads `pooling.output`; the other calls read `logits` and
apply a softmax (a sigmoid for a reranker's one label, runtime/ranking.py) here.

Bad input (no texts, a non-str or blank text, batch_size, top_k or top_n below 1, an unknown prompt
name, a call the bundle's task does not serve, a fill-mask text without a mask token) raises
GenerationError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np
from tokenizers import Encoding, Tokenizer

from edgelm.errors import GenerationError, warn
from edgelm.runtime import ranking
from edgelm.runtime.bundle import Bundle, FrontEnd
from edgelm.runtime.manifest import ENCODER_TASKS
from edgelm.runtime.prompts import PROMPT_LENGTH, prompt_length, prompt_text, special_ids
from edgelm.runtime.session import run_graph
from edgelm.runtime.unicode import unpaired_surrogate

LOGITS = "logits"  # the graph output every classifier and fill-mask bundle has
CLASSIFIER_TASKS = ("text-classification", "token-classification", "fill-mask")
MAX_LISTED = 5  # bad texts named in one error before "and N more"

Texts = str | Sequence[str]
Pair = tuple[str, str]  # (query, document), encoded as the tokenizer encodes a text pair


class Encoder(FrontEnd):
    """Front end for feature-extraction, classification, fill-mask and reranker (one-label classifier) bundles."""

    def __init__(self, bundle: Bundle):
        bundle.require_task("Encoder (embed, logits, classify, classify_tokens, fill_mask, rerank)", ENCODER_TASKS)
        self.bundle = bundle
        self._tokenizer = _truncating_copy(bundle.tokenizer, bundle.manifest.max_context)
        self._counter: Tokenizer | None = None  # an uncut copy, made on first count_tokens

    # -- public calls ----------------------------------------------------------------------
    def embed(self, texts: Texts, prompt: str | None = None, batch_size: int = 32) -> np.ndarray:
        """Sentence vectors, (n, dim) float32 for a list, (dim,) for one str.

        prompt: a name in the manifest's `prompts` (e.g. "query"), whose text is put before each
        text, as SentenceTransformer.encode(texts, prompt_name=...) does; None uses the bundle's
        `default_prompt`, if it has one.
        """
        self.bundle.require_task("embed", ("feature-extraction",))
        items, single = _as_list(texts)
        prefix = prompt_text(self.manifest, prompt)
        skip = prompt_length(self._tokenizer, self._special_ids, prefix)  # pooled graphs that leave the prompt out skip these
        _, rows = self._forward([prefix + t for t in items], self.manifest.pooling.output, batch_size, prompt_tokens=skip)
        vectors = np.stack(rows)  # (n, dim)
        return vectors[0] if single else vectors

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               batch_size: int = 32) -> list[dict]:
        """DOCUMENTS ordered by relevance to QUERY: [{"index", "score"}], best first, the first TOP_N.

        score is what sentence-transformers' CrossEncoder.predict gives for (query, document):
        the sigmoid of the bundle's one logit. Pairs over max_context are cut as transformers cuts
        pairs (longest_first: tokens come off the longer of the two).
        """
        self._require_reranker()
        ranking.check_top_n(top_n)
        scores = self.score_pairs([(ranking.check_query(query), d) for d in _documents(documents)], batch_size)
        return ranking.ranked(scores, top_n)

    def score_pairs(self, pairs: Sequence[Pair], batch_size: int = 32) -> np.ndarray:
        """Relevance of each (query, document) pair, (n,) float64 in (0, 1), in PAIRS' order."""
        self._require_reranker()
        items = _pairs(pairs)
        rows = self._run(self._encode(items, "pairs"), LOGITS, _check_batch_size(batch_size), pairs=True)
        return ranking.sigmoid(np.stack(rows)[:, 0])  # rows: (1,) each

    def encode_pairs(self, pairs: Sequence[Pair]) -> list[list[int]]:
        """Token ids of each (query, document) pair as the graph gets them: special tokens added, cut to max_context."""
        self._require_reranker()
        return [e.ids for e in self._encode(_pairs(pairs), "pairs", warn_cuts=False)]

    def count_tokens(self, texts: Texts, prompt: str | None = None) -> list[int]:
        """Tokens each text encodes to, special tokens included, before any cut at max_context
        (a server refuses a text over the limit and reports usage from these counts). PROMPT: as
        `embed` takes it (feature-extraction bundles only), its tokens counted with each text."""
        items, _ = _as_list(texts)
        if prompt is not None or self.manifest.default_prompt is not None:
            prefix = prompt_text(self.manifest, prompt)
            items = [prefix + t for t in items]
        if self._counter is None:
            self._counter = Tokenizer.from_str(self._tokenizer.to_str())
            self._counter.no_truncation()
        return [len(e.ids) for e in self._counter.encode_batch(items, add_special_tokens=True)]

    def logits(self, texts: Texts, batch_size: int = 32) -> list[np.ndarray]:
        """Raw task logits per text, unpadded: (labels,), (seq, labels) or (seq, vocab).

        seq counts every token of the encoded text, special tokens included. A single str
        still gives a one-element list.
        """
        self.bundle.require_task("logits", CLASSIFIER_TASKS)
        items, _ = _as_list(texts)
        return self._forward(items, LOGITS, batch_size)[1]

    def classify(self, texts: Texts, top_k: int | None = 1, batch_size: int = 32) -> list:
        """The top_k labels by softmax score, best first, as [{"label", "score"}].

        A str gives that list; a list of texts gives one such list per text. top_k=None
        returns every label.
        """
        self.bundle.require_task("classify", ("text-classification",))
        _check_top_k(top_k, allow_all=True)
        items, single = _as_list(texts)
        _, rows = self._forward(items, LOGITS, batch_size)
        results = [self._top_labels(_softmax(row), top_k) for row in rows]  # row: (labels,)
        return results[0] if single else results

    def classify_tokens(self, texts: Texts, batch_size: int = 32) -> list:
        """Per non-special token: {"token", "label", "score", "start", "end"}.

        `token` is the vocabulary token (e.g. "##ing", "Ġquick"); text[start:end] is the
        span of the text it came from. A str gives its list; a list gives one list per text.
        """
        self.bundle.require_task("classify_tokens", ("token-classification",))
        items, single = _as_list(texts)
        encodings, rows = self._forward(items, LOGITS, batch_size)
        results = [self._token_labels(enc, _softmax(row)) for enc, row in zip(encodings, rows)]  # row: (seq, labels)
        return results[0] if single else results

    def fill_mask(self, texts: Texts, top_k: int = 5, batch_size: int = 32) -> list:
        """Candidates for each mask token: {"token_id", "token", "score", "sequence"}, best first.

        Shapes: a list of texts gives result[text][mask][candidate] (masks in text order);
        a str gives result[mask][candidate], or just result[candidate] when it holds exactly
        one mask. `sequence` is the text decoded with that candidate in place of its mask
        (special tokens other than masks dropped).
        """
        self.bundle.require_task("fill_mask", ("fill-mask",))
        _check_top_k(top_k, allow_all=False)
        items, single = _as_list(texts)
        encodings, rows = self._forward(items, LOGITS, batch_size, check=self._check_masks)
        results = [self._fill(enc, row, top_k) for enc, row in zip(encodings, rows)]  # row: (seq, vocab)
        if single:
            return results[0][0] if len(results[0]) == 1 else results[0]
        return results

    def encode(self, texts: Texts) -> list[list[int]]:
        """Token ids of each text as the graph gets them: special tokens added, cut to max_context."""
        items, _ = _as_list(texts)
        return [e.ids for e in self._encode(items)]

    def output(self, texts: Texts, name: str, batch_size: int = 32) -> list[np.ndarray]:
        """Graph output NAME per text, unpadded (conformance vectors record and check these).

        The texts run as given: no prompt is added (a default one neither) and prompt_length is 0."""
        items, _ = _as_list(texts)
        if name not in self.manifest.output_names():
            raise GenerationError(f"the graph has no output {name!r}; it has {', '.join(self.manifest.output_names())}")
        return self._forward(items, name, batch_size)[1]

    # -- encode and run --------------------------------------------------------------------
    def _forward(self, items: list[str], output: str, batch_size: int,
                 check: Callable[[list[Encoding]], None] | None = None,
                 prompt_tokens: int = 0) -> tuple[list[Encoding], list[np.ndarray]]:
        """Encode ITEMS, CHECK the encodings, run them; the graph's OUTPUT per text, in ITEMS' order."""
        batch_size = _check_batch_size(batch_size)
        encodings = self._encode(items)
        if check is not None:
            check(encodings)
        return encodings, self._run(encodings, output, batch_size, prompt_tokens=prompt_tokens)

    def _encode(self, items: list[str] | list[Pair], noun: str = "texts", warn_cuts: bool = True) -> list[Encoding]:
        """Token ids with special tokens, cut to max_context; warns once if any text (or pair) was cut."""
        encodings = self._tokenizer.encode_batch(items, add_special_tokens=True)
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated and warn_cuts:
            warn(f"{truncated} of {len(items)} {noun} were truncated to {self.manifest.max_context} tokens "
                 "(the bundle's max_context); the rest of each was ignored")
        return encodings

    def _require_reranker(self) -> None:
        problem = ranking.reranker_problem(self.manifest, self.bundle.folder)
        if problem:
            raise GenerationError(problem)

    def feeds(self, texts: Texts, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
        """The graph inputs for TEXTS, batch by batch, exactly as the runtime feeds them.

        quantize's int8-static calibrates on these, so it sees the inputs the bundle will get.
        """
        items, _ = _as_list(texts)
        _check_batch_size(batch_size)
        encodings = self._encode(items)
        return [self._feed(encodings[i:i + batch_size]) for i in range(0, len(encodings), batch_size)]

    def _run(self, encodings: list[Encoding], output: str, batch_size: int, pairs: bool = False,
             prompt_tokens: int = 0) -> list[np.ndarray]:
        """Run length-sorted batches; per text its row of OUTPUT, cut to its own length."""
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        rows: list[np.ndarray | None] = [None] * len(encodings)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            feed = self._feed([encodings[i] for i in chunk], pairs, prompt_tokens)
            out = run_graph(lambda: self.bundle.session.run([output], feed))[0]  # (batch, dim) or (batch, seq, n)
            for row, i in zip(out, chunk):
                length = len(encodings[i].ids)
                rows[i] = (row[:length] if row.ndim == 2 else row).astype(np.float32, copy=False)
        return rows

    def _feed(self, encodings: list[Encoding], pairs: bool = False, prompt_tokens: int = 0) -> dict[str, np.ndarray]:
        """input_ids padded on the right, attention_mask, token_type_ids (zeros; a pair's type ids when
        PAIRS): all (batch, seq) int64; prompt_length (1,) int64."""
        pad = self.manifest.special_tokens.pad
        longest = max(len(e.ids) for e in encodings)
        input_ids = np.full((len(encodings), longest), 0 if pad is None else pad, dtype=np.int64)  # (batch, seq)
        attention_mask = np.zeros_like(input_ids)  # (batch, seq)
        token_type_ids = np.zeros_like(input_ids)  # (batch, seq); padding is type 0, as transformers pads it
        for row, e in enumerate(encodings):
            input_ids[row, :len(e.ids)] = e.ids
            attention_mask[row, :len(e.ids)] = 1
            if pairs:
                token_type_ids[row, :len(e.ids)] = e.type_ids
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                  PROMPT_LENGTH: np.array([prompt_tokens], dtype=np.int64)}  # (1,)
        return {name: arrays[name] for name in self.manifest.input_names()}

    # -- task post-processing --------------------------------------------------------------
    def _labels(self, count: int) -> tuple[str, ...]:
        """Class names from the manifest; transformers' LABEL_i when a bundle has none."""
        return self.manifest.labels or tuple(f"LABEL_{i}" for i in range(count))

    def _top_labels(self, probs: np.ndarray, top_k: int | None) -> list[dict]:
        labels = self._labels(len(probs))
        best = np.argsort(-probs, kind="stable")[: top_k or len(probs)]  # probs: (labels,)
        return [{"label": labels[i], "score": float(probs[i])} for i in best]

    def _token_labels(self, enc: Encoding, probs: np.ndarray) -> list[dict]:
        labels = self._labels(probs.shape[-1])
        best = probs.argmax(-1)  # probs: (seq, labels) -> (seq,)
        return [
            {"token": enc.tokens[t], "label": labels[best[t]], "score": float(probs[t, best[t]]),
             "start": enc.offsets[t][0], "end": enc.offsets[t][1]}
            for t in range(len(enc.ids)) if not enc.special_tokens_mask[t]
        ]

    def _check_masks(self, encodings: list[Encoding]) -> None:
        """Every text must hold the mask token (after truncation); name the ones that do not."""
        mask = self.manifest.special_tokens.mask
        if mask is None:
            raise GenerationError(f"bundle {self.bundle.folder} records no mask token; re-export it with --task fill-mask")
        missing = [i for i, e in enumerate(encodings) if mask not in e.ids]
        if missing:
            token = self._tokenizer.id_to_token(mask)
            raise GenerationError(
                f"{_listed('text', missing)} {'has' if len(missing) == 1 else 'have'} no {token} token "
                f"(within the first {self.manifest.max_context} tokens); put {token} where the word to fill goes"
            )

    def _fill(self, enc: Encoding, logits: np.ndarray, top_k: int) -> list[list[dict]]:
        """Top candidates at each mask position of one text; logits: (seq, vocab)."""
        ids = np.asarray(enc.ids)  # (seq,)
        positions = np.flatnonzero(ids == self.manifest.special_tokens.mask)
        keep = [t for t in range(len(ids)) if not enc.special_tokens_mask[t]]  # drops [CLS]/[SEP], keeps masks
        results = []
        for pos in positions:
            probs = _softmax(logits[pos])  # (vocab,)
            best = np.argsort(-probs, kind="stable")[:top_k]
            results.append([self._candidate(ids, keep, pos, int(c), float(probs[c])) for c in best])
        return results

    @cached_property
    def _special_ids(self) -> set[int]:
        """The tokenizer's special ids (prompt lengths, fill-mask candidates), found once."""
        return special_ids(self._tokenizer, self.manifest)

    def _candidate(self, ids: np.ndarray, keep: list[int], pos: int, token_id: int, score: float) -> dict:
        filled = ids.copy()
        filled[pos] = token_id
        token = self._tokenizer.decode([token_id]).strip() or self._tokenizer.id_to_token(token_id)
        if token_id in self._special_ids:  # a special candidate ([SEP]) is left out, as transformers' pipeline does
            keep = [t for t in keep if t != pos]
        sequence = self._tokenizer.decode(filled[keep].tolist(), skip_special_tokens=False)
        return {"token_id": token_id, "token": token, "score": score, "sequence": sequence}


# -- input checks and helpers ------------------------------------------------------------------
def _truncating_copy(tokenizer: Tokenizer, max_context: int) -> Tokenizer:
    """A copy (the bundle's own stays untouched) that cuts to max_context and never pads."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.enable_truncation(max_length=max_context)
    return copy


def _as_list(texts: Texts, noun: str = "text") -> tuple[list[str], bool]:
    """(texts as a list, whether one str was passed); every problem in one GenerationError.

    NOUN names the items in the message ("document" for rerank's documents)."""
    if isinstance(texts, str):
        items, single = [texts], True
    elif isinstance(texts, (list, tuple)):
        items, single = list(texts), False
    else:
        raise GenerationError(f"{_plural(noun)} must be a str or a list of str, got {type(texts).__name__}")
    if not items:
        raise GenerationError(f"{_plural(noun)} is an empty list; pass at least one {noun}")
    not_str = [i for i, t in enumerate(items) if not isinstance(t, str)]
    blank = [i for i, t in enumerate(items) if isinstance(t, str) and not t.strip()]
    broken = [i for i, t in enumerate(items) if isinstance(t, str) and unpaired_surrogate(t) is not None]
    problems = [f"{noun} {i} is {type(items[i]).__name__}, not str" for i in not_str[:MAX_LISTED]]
    if len(not_str) > MAX_LISTED:
        problems.append(f"and {len(not_str) - MAX_LISTED} more {_plural(noun)} are not str")
    if blank:
        problems.append(f"{_listed(noun, blank)} {'is' if len(blank) == 1 else 'are'} empty or only whitespace")
    if broken:
        problems.append(f"{_listed(noun, broken)} {'holds' if len(broken) == 1 else 'hold'} an unpaired surrogate "
                        "(not valid Unicode: decode bytes as UTF-8 first)")
    if problems:
        raise GenerationError(*problems, "pass non-empty, valid Unicode strings only")
    return items, single


def _documents(documents: Sequence[str]) -> list[str]:
    """DOCUMENTS as a list of non-blank str (a lone str is refused: ranking one document is a mistake)."""
    if isinstance(documents, str):
        raise GenerationError("documents must be a list of str, got one str; pass [document]")
    return _as_list(documents, "document")[0]


def _pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """PAIRS as (query, document) tuples of str, each side checked as a text is."""
    if not isinstance(pairs, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise GenerationError("pairs must be a list of (query, document) pairs of str")
    if not pairs:
        raise GenerationError("pairs is an empty list; pass at least one (query, document) pair")
    queries, _ = _as_list([q for q, _ in pairs], "query")
    documents, _ = _as_list([d for _, d in pairs], "document")
    return list(zip(queries, documents))


def _listed(noun: str, indices: list[int]) -> str:
    """'text 3' or 'texts 0, 2, 5 (and 4 more)'."""
    if len(indices) == 1:
        return f"{noun} {indices[0]}"
    shown = ", ".join(map(str, indices[:MAX_LISTED]))
    more = f" (and {len(indices) - MAX_LISTED} more)" if len(indices) > MAX_LISTED else ""
    return f"{_plural(noun)} {shown}{more}"


def _plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_batch_size(batch_size: int) -> int:
    if not _is_count(batch_size):
        raise GenerationError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return batch_size


def _check_top_k(top_k: int | None, allow_all: bool) -> None:
    if allow_all and top_k is None:
        return
    if not _is_count(top_k):
        extra = " (or None for every label)" if allow_all else ""
        raise GenerationError(f"top_k must be a whole number >= 1{extra}, got {top_k!r}")


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 for stability; (..., n) -> (..., n)."""
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(-1, keepdims=True)
