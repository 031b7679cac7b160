"""A chat that keeps its KV cache between turns, so each turn prefills only what is new.

    chat = lm.conversation(system="You are terse.", max_new_tokens=64)
    chat.send("What is the capital of France?")         # -> 'Paris.'
    for piece in chat.stream("And of Italy?"): ...       # the history so far, then this message
    chat.messages; chat.reused_tokens; chat.reset()

A chat app resends the whole history every turn, and `LanguageModel.generate` would prefill all of
it again. A Conversation runs its turns in a one-slot open batch (runtime/text_batch.py): the slot
keeps the previous turn's keys, so the next prompt, which begins with them, prefills only the new
messages. A reply equals `lm.generate(messages)` on the same history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edgelm.runtime.text_batch import TextBatch

if TYPE_CHECKING:
    from edgelm.runtime.language_model import Completion, LanguageModel


class Conversation:
    def __init__(self, lm: "LanguageModel", system: str | None = None, *, stop: Sequence[str] = (),
                 truncate_prompt: bool = False, **options: Any):
        self.lm = lm
        self._start = [{"role": "system", "content": system}] if system else []
        self.messages: list[dict[str, str]] = list(self._start)
        self._defaults = {"stop": stop, "truncate_prompt": truncate_prompt, **options}
        checked = dict(options)
        lm._request(stop, truncate_prompt, checked, checked.pop("json_schema", None))  # checked now, not at the first turn
        self._batch = TextBatch(lm, slots=1)

    def stream(self, content: str, **options: Any) -> Iterator[str]:
        """Pieces of the reply to CONTENT (a user message after the history); joined, `send`'s text.
        OPTIONS (json_schema too) for this turn only.

        The generator's return value is the turn's Completion. The message and its reply join the
        history once the reply is complete; a stream closed before its end leaves the history as it was.
        """
        merged = {**self._defaults, **options}
        request = self.lm._request(merged.pop("stop"), merged.pop("truncate_prompt"), merged, merged.pop("json_schema", None))
        messages = [*self.messages, {"role": "user", "content": content}]
        completions = yield from self.lm._run([messages], False, request, stream=True, batch=self._batch)
        self.messages = [*messages, {"role": "assistant", "content": completions[0].text}]
        return completions[0]

    def send(self, content: str, **options: Any) -> str:
        """The reply to CONTENT after the history (which then holds both)."""
        for _ in self.stream(content, **options):
            pass
        return self.messages[-1]["content"]

    def reset(self) -> None:
        """Back to the system message alone (its keys stay cached for the next turn)."""
        self.messages = list(self._start)

    @property
    def reused_tokens(self) -> int:
        """Prompt tokens, over every turn, taken from the cache instead of prefilled."""
        return self._batch.generator.reused_tokens
