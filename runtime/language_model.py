"""Text in, text out for decoder bundles: prompts, chat, sampling options, stops, streaming, batches.

`LanguageModel` is a thin layer over `Generator` (which works on ids): it turns prompts into ids
(plain text with the tokenizer's special tokens; chat messages through the chat template
without them, as transformers does), resolves sampling options against the bundle's
generation defaults, detokenizes each row as it grows, ends rows on stop strings, and times
prefill and decode.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from edgelm.errors import GenerationError, warn
from edgelm.runtime.bundle import Bundle, FrontEnd
from edgelm.runtime.chat_template import check_messages, knows_tools, render_chat
from edgelm.runtime.decoder import DecoderGraph
from edgelm.runtime.generator import OPTION_NAMES, Generator, GeneratorParams, newest_tokens
from edgelm.runtime.json_schema import SchemaGrammar, Vocabulary
from edgelm.runtime.manifest import DECODER_TASKS
from edgelm.runtime.sampling import TokenLogprob, check_logprobs
from edgelm.runtime.text_batch import TextBatch
from edgelm.runtime.text_row import TextRow
from edgelm.runtime.tools import ToolCall, ToolFormat, ToolSet, ToolText, history, tool_format
from edgelm.runtime.unicode import surrogate_problem

if TYPE_CHECKING:
    from edgelm.runtime.conversation import Conversation

Messages = list[dict[str, str]]
Prompt = Union[str, Messages]
Schema = Union[dict[str, Any], str]  # a JSON schema, or its JSON text


@dataclass
class Completion:
    """One row's result, with what it cost."""

    text: str
    token_ids: list[int]  # generated ids (an ending eos included)
    finish_reason: str  # eos | length | context | stop
    prompt_tokens: int
    first_token_seconds: float = 0.0  # prefill + first choice (time to first token)
    decode_seconds: float = 0.0  # every later step
    logprobs: list[TokenLogprob] | None = None  # per token id, when asked (complete(..., logprobs=k))
    tool_calls: list[ToolCall] = field(default_factory=list)  # calls the reply made (tools=...); text is what precedes them

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first, per second of decoding."""
        return (len(self.token_ids) - 1) / self.decode_seconds if self.decode_seconds > 0 else float("nan")


@dataclass(frozen=True)
class _Request:
    """Options of one generate/stream call, checked and resolved against the bundle's defaults."""

    params: GeneratorParams
    stop: tuple[str, ...] = ()
    truncate_prompt: bool = False
    grammar: SchemaGrammar | None = None  # json_schema, compiled: every row follows it
    logprobs: int | None = None  # record each token's log probability and this many alternatives
    tools: ToolSet | None = None  # the functions the reply may call
    rules: Any = None  # what each row's rule comes from (`.rule()`): the JSON schema's or the tools' grammar


class LanguageModel(FrontEnd):
    """A decoder bundle: generate, stream and chat, plus `generator()` for step-wise control."""

    def __init__(self, bundle: Bundle):
        bundle.require_task("LanguageModel (generate, stream, complete, generator)", DECODER_TASKS)
        self.bundle = bundle
        self.tokenizer = bundle.tokenizer
        self.graph = DecoderGraph(bundle.session, bundle.manifest, bundle.device)
        self._template = bundle.chat_template
        self._vocab: Vocabulary | None = None  # built at the first json_schema or logprobs' bytes
        self._vocab_lock = threading.Lock()

    # -- prompts ---------------------------------------------------------------------------
    def encode(self, prompt: Prompt, chat: bool = False, tools: ToolSet | None = None) -> list[int]:
        """Prompt ids: a str as plain text (with special tokens), or messages through the chat template.

        chat=True wraps a str as one user message. TOOLS (ToolSet.of(...)): the functions the reply may call.
        """
        if isinstance(prompt, str) and not prompt.strip():
            raise GenerationError("the prompt is empty; pass some text")
        if isinstance(prompt, str) and (chat or tools):
            prompt = [{"role": "user", "content": prompt}]
        text = prompt if isinstance(prompt, str) else self.render_chat(prompt, tools=tools)
        problem = surrogate_problem(text, "the prompt")
        if problem:
            raise GenerationError(problem)
        return self.tokenizer.encode(text, add_special_tokens=isinstance(prompt, str)).ids

    @property
    def tool_format(self) -> ToolFormat:
        """How this model's template writes tool calls (runtime/tools.py): Hermes' unless it is Llama 3's."""
        if self._template is None:
            return tool_format("", False)
        return tool_format(self._template, knows_tools(self._template))

    def render_chat(self, messages: Messages, add_generation_prompt: bool = True, tools: ToolSet | None = None) -> str:
        if self._template is None:
            raise GenerationError(f"{self.bundle.folder} has no chat template; pass plain text prompts")
        strings = self.manifest.special_token_strings or self._strings_from_ids()
        messages = check_messages(messages)
        native = knows_tools(self._template)  # the template renders tools itself, or they go in the system message
        if tools is None:
            return render_chat(self._template, history(messages, native), strings, add_generation_prompt)
        return render_chat(self._template, tools.prepare(messages, native), strings, add_generation_prompt,
                           list(tools.tools) if native else None)

    def _strings_from_ids(self) -> dict[str, str]:
        """bos_token/eos_token... for bundles written before the manifest recorded them."""
        special = self.manifest.special_tokens
        ids = {"bos_token": special.bos, "eos_token": special.eos[0] if special.eos else None,
               "pad_token": special.pad, "unk_token": special.unk}
        return {k: self.tokenizer.id_to_token(v) for k, v in ids.items() if v is not None}

    # -- options ---------------------------------------------------------------------------
    def params(self, **options: Any) -> GeneratorParams:
        """GeneratorParams with every unset option (max_new_tokens, temperature, top_k, top_p,
        repetition_penalty, seed) taken from the bundle's generation defaults (GeneratorParams.resolve)."""
        _check_option_names(options)
        return GeneratorParams.resolve(self.manifest.generation, **options)

    def conversation(self, system: str | None = None, **options: Any) -> "Conversation":
        """A chat that keeps its history and its KV cache between turns (`send`, `stream`, `reset`): each turn
        prefills only its new messages. OPTIONS as for `generate` (stop and truncate_prompt included)."""
        from edgelm.runtime.conversation import Conversation

        return Conversation(self, system, **options)

    def generator(self, params: GeneratorParams | None = None, **options: Any) -> Generator:
        """A step-wise Generator on this bundle (params, or options as for `params`)."""
        _check_option_names(options)
        special = self.manifest.special_tokens
        return Generator(self.graph, params or self.params(**options), self.manifest.max_context,
                         eos=special.eos, pad=special.pad)

    # -- generation ------------------------------------------------------------------------
    def generate(self, prompt: Prompt | Sequence[Prompt], *, chat: bool = False, stop: Sequence[str] = (),
                 truncate_prompt: bool = False, json_schema: Schema | None = None, **options: Any) -> str | list[str]:
        """The generated text for one prompt, or a list for a list of prompts (run as one batch).

        JSON_SCHEMA (a dict or its JSON text; {"type": "object"} is any JSON object): the text is a document that
        follows it (constrained decoding), unless max_new_tokens ends it first (finish reason "length")."""
        single = isinstance(prompt, str) or _is_messages(prompt)
        completions = self.complete([prompt] if single else prompt, chat=chat, stop=stop,
                                    truncate_prompt=truncate_prompt, json_schema=json_schema, **options)
        texts = [c.text for c in completions]
        return texts[0] if single else texts

    def stream(self, prompt: Prompt, *, chat: bool = False, stop: Sequence[str] = (), truncate_prompt: bool = False,
               json_schema: Schema | None = None, logprobs: int | None = None, tools: list[dict] | None = None,
               tool_choice: Any = None, **options: Any) -> Iterator[str]:
        """Text pieces as they are generated; joined, they equal `generate`'s text exactly (with tools: the text
        before any call).

        The generator's return value (StopIteration.value) is the run's Completion.
        """
        request = self._request(stop, truncate_prompt, options, json_schema, logprobs, tools, tool_choice)
        completions = yield from self._run([prompt], chat, request, stream=True)
        return completions[0]

    def complete(self, prompts: Sequence[Prompt], *, chat: bool = False, stop: Sequence[str] = (),
                 truncate_prompt: bool = False, json_schema: Schema | None = None, logprobs: int | None = None,
                 tools: list[dict] | None = None, tool_choice: Any = None, **options: Any) -> list[Completion]:
        """A Completion (text, ids, finish reason, timings) per prompt, decoded as one batch.

        LOGPROBS (0-20): each Completion's `logprobs` gives every generated token's log probability under the model
        (before temperature, penalty and schema) and that many most likely alternatives. TOOLS and TOOL_CHOICE as
        OpenAI's (runtime/tools.py): a reply's calls come in `tool_calls` (finish reason "tool_calls"), its `text` is
        what precedes them."""
        if isinstance(prompts, str) or _is_messages(prompts) or not isinstance(prompts, (list, tuple)) or not prompts:
            raise GenerationError("complete needs a non-empty list of prompts")
        request = self._request(stop, truncate_prompt, options, json_schema, logprobs, tools, tool_choice)
        runner = self._run(prompts, chat, request, stream=False)
        while True:  # a non-streaming run yields nothing; its Completions are the generator's return value
            try:
                next(runner)
            except StopIteration as finished:
                return finished.value

    def _request(self, stop: Sequence[str], truncate_prompt: bool, options: dict[str, Any],
                 json_schema: Schema | None = None, logprobs: int | None = None, tools: Any = None,
                 tool_choice: Any = None) -> _Request:
        _check_option_names(options)
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        if not all(isinstance(s, str) and s for s in stop):
            raise GenerationError(f"stop must be a list of non-empty strings, got {stop!r}")
        grammar = self.json_grammar(json_schema) if json_schema is not None else None
        check_logprobs(logprobs)
        toolset = ToolSet.of(tools, tool_choice)
        toolset = toolset.using(self.tool_format) if toolset is not None else None
        if toolset is not None and grammar is not None:
            raise GenerationError("pass json_schema or tools, not both")
        rules = toolset.grammar(self.vocabulary()) if toolset is not None else grammar
        return _Request(self.params(**options), stop, bool(truncate_prompt), grammar, logprobs, toolset, rules)

    def json_grammar(self, schema: Schema) -> SchemaGrammar:
        """SCHEMA compiled for this bundle's tokens (GenerationError naming what it cannot enforce)."""
        return self.vocabulary().compile(schema)

    def vocabulary(self) -> Vocabulary:
        """The tokens indexed by bytes (JSON schemas, logprobs' bytes): built at the first use (~0.3 s for 49k tokens)."""
        with self._vocab_lock:  # a server's event loop and its worker may both ask first
            if self._vocab is None:
                self._vocab = Vocabulary(self.tokenizer, self.graph.vocab_size, self.manifest.special_tokens.eos)
            return self._vocab

    def _prompt_ids(self, prompts: Sequence[Prompt], chat: bool, request: _Request) -> list[list[int]]:
        rows = []
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) and not _is_messages(prompt):
                raise GenerationError(f"prompt {i} must be a str or a list of chat messages, got {type(prompt).__name__}")
            rows.append(self._fit_context(self.encode(prompt, chat, request.tools), request))
        return rows

    def _fit_context(self, ids: list[int], request: _Request) -> list[int]:
        """The prompt ids, or a clear error / its newest tokens when it leaves no room to generate."""
        limit = self.manifest.max_context
        if len(ids) < limit:
            return ids
        if not request.truncate_prompt:
            raise GenerationError(f"the prompt has {len(ids)} tokens and the model's limit is {limit}; "
                                  "shorten it or pass truncate_prompt=True (--truncate-prompt) to drop its oldest tokens")
        kept = newest_tokens(ids, limit, request.params.max_new_tokens)
        warn(f"prompt truncated from {len(ids)} to its last {len(kept)} tokens to fit the model's limit of {limit}")
        return kept

    def _run(self, prompts: Sequence[Prompt], chat: bool, request: _Request, stream: bool, batch: TextBatch | None = None):
        """Decode PROMPTS together, each row with the request's options and seed (its text is what it gets alone).
        Yields row 0's text pieces when STREAM; returns the Completions.

        BATCH: an open batch with a free slot per prompt (a Conversation's), whose rows prefill only what their
        slot does not already hold; rows are released at the end (or when the caller closes the stream)."""
        prompt_ids = self._prompt_ids(prompts, chat, request)
        start = time.perf_counter()
        if batch is None:
            room = max(map(len, prompt_ids)) + request.params.max_new_tokens
            batch = TextBatch(self, slots=len(prompt_ids), capacity=room)
        rows: list[int] = []
        first = None
        shown = ToolText(request.tools.call_format) if request.tools else None  # row 0's text stops where a call begins
        try:
            for ids in prompt_ids:
                rule = request.rules.rule() if request.rules else None
                rows.append(batch.add(ids, request.params, request.stop, rule, request.logprobs))
            while batch.running:
                for update in batch.step():  # one token for every unfinished row
                    if stream and update.row == rows[0]:
                        piece = update.piece
                        if shown is not None:  # with tools: the text before a call, never the call
                            piece = shown.feed(piece) + (shown.finish() if update.finish_reason else "")
                        if piece:
                            yield piece
                first = first or time.perf_counter()
            end = time.perf_counter()
            return [self._completion(batch, r, ids, request, first - start, end - first) for r, ids in zip(rows, prompt_ids)]
        finally:
            for r in rows:
                batch.release(r)  # its keys stay in the slot for the next prompt that starts with them

    def _completion(self, batch: TextBatch, row: int, ids: list[int], request: _Request, first: float,
                    decode: float) -> Completion:
        text, reason, calls = batch.text(row), batch.finish_reason(row), []
        if request.tools is not None:
            text, calls = request.tools.parse(text)
            reason = "tool_calls" if calls and reason == "eos" else reason
        return Completion(text=text, token_ids=batch.tokens(row), finish_reason=reason, prompt_tokens=len(ids),
                          first_token_seconds=first, decode_seconds=decode, tool_calls=calls,
                          logprobs=batch.logprobs(row) if request.logprobs is not None else None)

    def text_row(self, stop: Sequence[str] = ()) -> TextRow:
        """A row's text state (detokenizer and stop strings), for a caller that drives a Generator itself."""
        return TextRow(self.tokenizer, (stop,) if isinstance(stop, str) else tuple(stop))


def _check_option_names(options: dict[str, Any]) -> None:
    unknown = set(options) - set(OPTION_NAMES)
    if unknown:
        raise GenerationError(f"unknown generation option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTION_NAMES)}")


def _is_messages(prompt: Any) -> bool:
    return isinstance(prompt, (list, tuple)) and bool(prompt) and all(isinstance(m, dict) for m in prompt)
