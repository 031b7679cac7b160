"""Terminal front ends for decoder bundles: stream one reply, and the interactive chat loop.

Only the runtime is used here, so `edgelm generate` and `edgelm chat` run on a box without torch.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from edgelm.errors import GenerationError


def stream_reply(lm: Any, prompt: Any, chat: bool, stats: bool = False, **options: Any) -> str:
    """Print the reply to PROMPT piece by piece as it is generated; return its text."""
    return print_pieces(lm, lm.stream(prompt, chat=chat, **options), stats)


def print_pieces(lm: Any, pieces: Any, stats: bool = False) -> str:
    """Print a reply's PIECES as they come (a stream whose return value is its Completion); return its text."""
    while True:
        try:
            click.echo(next(pieces), nl=False)
            sys.stdout.flush()
        except StopIteration as finished:
            done = finished.value  # the run's Completion
            break
    click.echo()
    if stats:
        click.echo(f"[{len(done.token_ids)} tokens ({done.finish_reason}), first after {done.first_token_seconds:.2f} s, "
                   f"then {done.decode_tokens_per_second:.1f} tokens/s, {runs_on(lm.bundle)}]", err=True)
    return done.text


def runs_on(bundle: Any) -> str:
    """'provider cpu (auto: ...), 2 threads (affinity 2 CPUs, no CPU quota)', for --verbose and --stats."""
    count = bundle.threads.count
    return f"provider {bundle.provider_note}, {count} thread{'' if count == 1 else 's'} ({bundle.threads.reason})"


def chat_loop(lm: Any, system: str | None = None, **options: Any) -> None:
    """Read a user line, stream the reply, keep the history; /reset clears it, /exit, EOF or Ctrl-C ends."""
    try:
        _converse(lm, system, **options)
    except KeyboardInterrupt:  # Ctrl-C is how many people leave a chat: end it, no traceback
        click.echo()


def _converse(lm: Any, system: str | None = None, **options: Any) -> None:
    if not lm.manifest.chat_template_file:
        raise GenerationError(f"{lm.bundle.folder} has no chat template; use `edgelm generate --raw` instead")
    conversation = lm.conversation(system, **options)  # keeps the cache between turns: each prefills only what is new
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
            conversation.reset()
            continue
        if not line.strip():
            continue
        print_pieces(lm, conversation.stream(line))
