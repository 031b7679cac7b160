"""Terminal front ends for decoder bundles: stream one reply, and the interactive chat loop.

Only the runtime is used here, so `edgelm generate` and `edgelm chat` run on a box without torch.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from edgelm.errors import GenerationError


def stream_reply(lm: Any, prompt: Any, chat: bool, stats: bool = False, **options: Any) -> str:
    """Print the reply to PROMPT piece by piece as it is generated; return its text."""
    start, pieces = time.perf_counter(), []
    for piece in lm.stream(prompt, chat=chat, **options):
        if not pieces:
            first = time.perf_counter() - start
        pieces.append(piece)
        click.echo(piece, nl=False)
        sys.stdout.flush()
    click.echo()
    if stats:
        seconds = time.perf_counter() - start
        tokens = len(lm.tokenizer.encode("".join(pieces), add_special_tokens=False).ids)
        click.echo(f"[{tokens} tokens in {seconds:.2f} s, first after {first if pieces else seconds:.2f} s, "
                   f"{tokens / seconds:.1f} tokens/s, provider {lm.provider}]", err=True)
    return "".join(pieces)


def chat_loop(lm: Any, system: str | None = None, **options: Any) -> None:
    """Read a user line, stream the reply, keep the history; /reset clears it, /exit or EOF ends."""
    if not lm.manifest.chat_template_file:
        raise GenerationError(f"{lm.bundle.folder} has no chat template; use `edgelm generate --raw` instead")
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    click.echo(f"chatting with {lm.bundle.folder} on {lm.provider} (/reset clears, /exit quits)", err=True)
    while True:
        try:
            line = input("> ")
        except EOFError:
            click.echo()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            history = list(start)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        reply = stream_reply(lm, history, chat=True, **options)
        history.append({"role": "assistant", "content": reply})
