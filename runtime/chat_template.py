"""Render a bundle's chat template the way transformers' apply_chat_template does.

transformers renders with a sandboxed Jinja environment (trim_blocks, lstrip_blocks, the
loopcontrols extension), adds `raise_exception` and `strftime_now`, a `tojson` that keeps
non-ASCII text, and passes the tokenizer's special-token strings (`bos_token`, `eos_token`...)
as variables. The rendered text is then encoded WITHOUT special tokens: the template already
wrote them. Reproducing this exactly is what makes chat prompts give transformers' token ids.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from edgelm.errors import BundleError, GenerationError

ROLES = ("system", "user", "assistant", "tool")


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2 import TemplateError, ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def check_template(source: str, name: str) -> None:
    """Compile SOURCE once at load, so a broken template is a bundle error, not a failure at the first chat."""
    from jinja2 import TemplateSyntaxError

    try:
        _compile(source)
    except TemplateSyntaxError as e:
        raise BundleError(f"{name} is not a valid Jinja template (line {e.lineno}: {e.message}); re-export the bundle") from None


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """A list of {"role", "content"} dicts with known roles and text content (an assistant message that calls tools
    may have none), or a clear error."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise GenerationError("a chat needs a non-empty list of messages like {'role': 'user', 'content': 'Hi'}")
    for i, m in enumerate(messages):
        calls = isinstance(m, dict) and m.get("role") == "assistant" and bool(m.get("tool_calls"))
        content_ok = isinstance(m, dict) and (isinstance(m.get("content"), str) or (calls and m.get("content") is None))
        if not content_ok or m.get("role") not in ROLES:
            raise GenerationError(f"message {i} must be a dict with a role in {', '.join(ROLES)} and str content, got {m!r:.80}")
    return [dict(m) for m in messages]


@lru_cache(maxsize=8)
def knows_tools(source: str) -> bool:
    """Whether the template renders a `tools` variable itself (Qwen's, Hermes', SmolLM3's do; SmolLM2's does not)."""
    from jinja2 import meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return "tools" in meta.find_undeclared_variables(ImmutableSandboxedEnvironment().parse(source))


def render_chat(template: str, messages: list[dict[str, Any]], special_tokens: dict[str, str],
                add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
    """The prompt text for MESSAGES (and TOOLS, for a template that renders them); the caller encodes it without
    adding special tokens."""
    from jinja2 import TemplateError

    try:
        return _compile(template).render(messages=check_messages(messages), add_generation_prompt=add_generation_prompt,
                                         tools=tools, **special_tokens)
    except GenerationError:
        raise
    except TemplateError as e:
        raise GenerationError(f"the bundle's chat template refused these messages: {e}") from e
    except Exception as e:  # the template's own code failed (a division by zero, a bad index...)
        raise GenerationError(f"the bundle's chat template does not render ({type(e).__name__}: {e}); "
                              "fix chat_template.jinja or re-export the bundle") from e
