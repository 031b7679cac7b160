"""Output that follows a JSON schema (OpenAI's response_format): constrained decoding with llguidance.

    vocab = Vocabulary(tokenizer, vocab_size, eos)           # once per bundle (~0.3 s for 49k tokens)
    grammar = vocab.compile(schema)                         # once per request (~1 ms); names an unsupported keyword
    rule = grammar.rule()                                   # one per row: its own parser state
    rule.restrict(scores)                                   # (1, vocab) in place: tokens the schema forbids -> -inf
    rule.consume(token)                                     # after the choice

Each step masks the logits to the tokens that keep the text a prefix of a document the schema accepts
(eos only once the document is complete), so every finished output parses and validates. Why
llguidance and not xgrammar (both take a Hugging Face tokenizer, both cover what OpenAI's strict mode
allows, both cost ~10-20 us per token here): llguidance has no dependencies, while xgrammar imports
torch and transformers, which the runtime never does; llguidance compiles a schema 5-10x faster (a
server compiles one per request); and it refuses keywords it cannot enforce (uniqueItems, not,
if/then) where xgrammar silently ignores them. Measured: docs/benchmarks.md, "Structured output".

Whitespace is fixed to json.dumps' layout (`, ` and `: `, no newlines): a small model given free
whitespace can loop on it until max_new_tokens, and the compact form (`,` `:`) is rarer in training
text (SmolLM2-135M then left arrays empty and looped in strings more often). A schema bounds a
document's shape, not its length: a small model can still repeat itself inside a string or a
number until max_new_tokens ends the row (finish reason "length", as OpenAI's API reports it);
maxLength / maxItems in the schema bound that.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance
import llguidance.numpy as llnp
import numpy as np
from tokenizers import Tokenizer

from edgelm.errors import GenerationError

COMPILE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}  # json.dumps' layout
JSON_OBJECT = {"type": "object"}  # OpenAI's JSON mode: any JSON object


class Vocabulary:
    """The bundle's tokens as llguidance sees them (built once: it indexes every token's bytes); also what
    logprobs report as each token's bytes."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos: tuple[int, ...]):
        """VOCAB_SIZE: the logits' width, which may exceed the tokenizer's (ids past it are never allowed)."""
        self._tokenizer = llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=max(vocab_size, tokenizer.get_vocab_size()),
                                                 eos_token=list(eos) or None)
        self._ends = bool(eos)

    def token_bytes(self, token: int) -> bytes:
        """TOKEN's bytes (a byte-level BPE token may hold part of a UTF-8 character; special tokens their text)."""
        return self._tokenizer.decode_bytes([token])

    def compile(self, schema: dict[str, Any] | str) -> "SchemaGrammar":
        """SCHEMA (a dict or its JSON text) ready to constrain rows; GenerationError naming what it cannot enforce."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise GenerationError(f"the JSON schema is not valid JSON ({e}); pass a JSON object") from None
        if not isinstance(schema, dict):
            raise GenerationError(f"a JSON schema must be a JSON object, got {type(schema).__name__}")
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=COMPILE)
        except ValueError as e:
            raise GenerationError(f"the JSON schema cannot be read: {e}") from None
        return self._checked(grammar, "the JSON schema")

    def compile_lark(self, lark: str, what: str) -> "SchemaGrammar":
        """A Lark grammar in llguidance's dialect (`%json {...}` embeds a schema), ready to constrain rows."""
        return self._checked(llguidance.LLMatcher.grammar_from_lark(lark), what)

    def _checked(self, grammar: str, what: str) -> "SchemaGrammar":
        if not self._ends:
            raise GenerationError("this bundle names no eos token, so constrained output could never end; "
                                  "re-export it with the model's eos_token_id")
        probe = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if probe.is_error():
            raise GenerationError(f"{what} uses something constrained decoding cannot enforce: "
                                  f"{_one_line(probe.get_error())}; remove or rewrite it")
        return SchemaGrammar(self, grammar)


class SchemaGrammar:
    """One compiled schema; `rule()` gives each row its own parser."""

    def __init__(self, vocab: Vocabulary, grammar: str):
        self.vocab = vocab
        self._grammar = grammar

    def rule(self) -> "SchemaRule":
        tokenizer = self.vocab._tokenizer
        return SchemaRule(llguidance.LLMatcher(tokenizer, self._grammar, log_level=0), tokenizer.vocab_size)


class SchemaRule:
    """One row's parser state: which tokens may come next."""

    def __init__(self, matcher: llguidance.LLMatcher, tokens: int):
        self._matcher = matcher
        self._bits = llnp.allocate_token_bitmask(1, tokens)  # (1, tokens / 32) int32: bit t = token t allowed

    def restrict(self, scores: np.ndarray) -> np.ndarray:
        """SCORES (1, vocab) with every token the schema forbids next set to -inf (in place; returned)."""
        llnp.fill_next_token_bitmask(self._matcher, self._bits)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:scores.shape[-1]].view(bool)  # (vocab,)
        np.putmask(scores[0], ~allowed, -np.inf)
        return scores

    def consume(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise GenerationError(f"token {token} breaks the JSON schema: {_one_line(self._matcher.get_error())}")

    @property
    def complete(self) -> bool:
        """The text so far is a whole document the schema accepts."""
        return self._matcher.is_accepting()


def _one_line(message: str) -> str:
    return " ".join(message.split())
