"""Tool calls (OpenAI's `tools` and `tool_choice`) in the format the model's template defines, with decoding that
keeps them valid.

    toolset = ToolSet.of(tools, tool_choice)                    # checked OpenAI definitions; None for tool_choice "none"
    messages = toolset.prepare(messages, template_knows_tools)  # history with calls and results the template can render
    rule = toolset.grammar(vocab).rule()                        # per row: what constrains its calls
    content, calls = toolset.parse(text)                        # the reply split into text and ToolCalls

Two formats (`ToolFormat`, chosen from the template by `tool_format`). Hermes' (Qwen 2.5 / 3, SmolLM3, Hermes 2 / 3
and others are trained on it; also what a template without tools is told to write):

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

and Llama 3.1 / 3.2 / 3.3's, whose templates ask for one bare JSON object per reply:

    {"name": "get_weather", "parameters": {"city": "Paris"}}

A chat template that renders `tools` itself (its Jinja reads the `tools` variable) gets them as
transformers passes them; one that knows no tools (SmolLM2's) gets them as a system message that
describes this format, and earlier calls and tool results written as the text such a template
would have rendered. Decoding keeps every call valid: with `tool_choice` "required" or a named
function, the whole reply is constrained to calls whose arguments follow the function's JSON
schema; with "auto", the reply is free until it writes `<tool_call>`, then the call is constrained
until `</tool_call>` (llama.cpp's lazy grammars do the same). In Llama 3's format "auto" is parsed, not
constrained (a bare object has no marker to start a grammar on before it is half written). The constraint
engine is llguidance (runtime/json_schema.py says why).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.json_schema import COMPILE, Vocabulary

OPEN, CLOSE = "<tool_call>", "</tool_call>"
CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.S)
CHOICES = ("none", "auto", "required")
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names

SYSTEM = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{signatures}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class ToolFormat:
    """How a family's template writes a call."""

    name: str
    open: str  # where a call begins in a reply's text
    key: str  # the arguments' key in a call's object
    tagged: bool  # calls sit in OPEN ... CLOSE blocks, several per reply (Hermes); else one bare object (Llama 3)


HERMES = ToolFormat("hermes", OPEN, "arguments", True)
LLAMA3 = ToolFormat("llama3", '{"name"', "parameters", False)


def tool_format(template: str, renders_tools: bool) -> ToolFormat:
    """The call format of a chat TEMPLATE's source: Llama 3's when a template that renders tools asks for
    "parameters" and has no <tool_call> tags, else Hermes' (Qwen's, SmolLM3's, and the described format of a
    template that knows no tools)."""
    return LLAMA3 if renders_tools and OPEN not in template and '"parameters"' in template else HERMES


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text of an object, as OpenAI gives it
    id: str


@dataclass(frozen=True)
class ToolSet:
    tools: tuple[dict, ...]  # OpenAI's definitions: {"type": "function", "function": {"name", "description", "parameters"}}
    choice: str  # auto | required | a function's name
    parallel: bool = True  # a reply may make several calls (OpenAI's parallel_tool_calls)
    call_format: ToolFormat = HERMES  # how the model writes calls (`using`)

    @classmethod
    def of(cls, tools: Any, choice: Any = None, parallel: bool = True) -> "ToolSet | None":
        """TOOLS and TOOL_CHOICE checked (GenerationError naming the problem); None when no tool may be called."""
        if tools is None or tools == []:
            if choice not in (None, "none", "auto"):
                raise GenerationError("tool_choice needs tools: pass the functions the model may call")
            return None
        if not isinstance(tools, (list, tuple)):
            raise GenerationError("tools must be a list of {\"type\": \"function\", \"function\": {\"name\", \"parameters\"}}")
        checked = tuple(_check_tool(t, i) for i, t in enumerate(tools))
        names = [t["function"]["name"] for t in checked]
        if len(set(names)) != len(names):
            raise GenerationError(f"tools name a function twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        choice = "auto" if choice is None else choice
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
            if name not in names:
                raise GenerationError(f"tool_choice names a function that is not in tools: {name!r}")
            choice = name
        elif choice not in CHOICES:
            raise GenerationError(f"tool_choice must be none, auto, required or {{\"type\": \"function\", \"function\": "
                                  f"{{\"name\": ...}}}}, got {choice!r}")
        if not isinstance(parallel, bool):
            raise GenerationError(f"parallel_tool_calls must be true or false, got {parallel!r}")
        return None if choice == "none" else cls(checked, choice, parallel)

    def using(self, call_format: ToolFormat) -> "ToolSet":
        """This set, for a model whose template writes calls in CALL_FORMAT."""
        return replace(self, call_format=call_format)

    @property
    def forced(self) -> bool:
        """Every reply is calls only (required, or a named function)."""
        return self.choice != "auto"

    # -- prompts -------------------------------------------------------------------------------
    def prepare(self, messages: list[dict], template_knows_tools: bool) -> list[dict]:
        """MESSAGES for a template that renders tools itself (calls' arguments as dicts, as transformers passes
        them), or, for one that does not, with the tools described in the system message and calls and
        results written as text."""
        out = history(messages, template_knows_tools)
        if template_knows_tools:
            return out
        described = SYSTEM.format(signatures="\n".join(json.dumps(t, ensure_ascii=False) for t in self.tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + described}
        else:
            out.insert(0, {"role": "system", "content": described})
        return out

    # -- decoding ------------------------------------------------------------------------------
    def grammar(self, vocab: Vocabulary) -> "ToolGrammar":
        functions = [t["function"] for t in self.tools if self.choice in ("auto", "required", t["function"]["name"])]
        key = self.call_format.key
        call = {"anyOf": [{"type": "object", "properties": {"name": {"const": f["name"]}, key: _arguments(f)},
                           "required": ["name", key], "additionalProperties": False} for f in functions],
                "x-guidance": COMPILE}
        body = "%json " + json.dumps(call)
        if not self.call_format.tagged:  # one bare object: the whole reply when forced, free text under auto
            grammar = vocab.compile_lark(f"start: {body}", "the tools' parameters") if self.forced else None
            return ToolGrammar(vocab, grammar, lazy=False)
        if self.forced:
            more = ' ("\\n" block)*' if self.parallel else ""
            lark = f'start: block{more}\nblock: "{OPEN}\\n" {body} "\\n{CLOSE}"'
        else:  # after <tool_call> (its newline may have come with the same token)
            lark = f'start: "\\n"? {body} "\\n{CLOSE}"'
        return ToolGrammar(vocab, vocab.compile_lark(lark, "the tools' parameters"), lazy=not self.forced)

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """The reply's text before its first call (without the blanks before it) and its calls. Text stops at the first
        OPEN even when what follows is no whole call (cut by max_tokens or a stop string: decoding constrains the
        rest), as `ToolText` streams it."""
        if self.call_format.tagged:
            calls = [call for match in CALL.finditer(text) if (call := _call(match.group(1))) is not None]
        else:  # unconstrained under auto: only the functions offered count
            names = {t["function"]["name"] for t in self.tools}
            calls = [call for call in _bare_calls(text, self.call_format) if call.name in names]
        at = text.find(self.call_format.open)
        if at < 0:
            return text, calls
        return text[:at].rstrip(), (calls if self.parallel else calls[:1])


def history(messages: list[dict], template_knows_tools: bool) -> list[dict]:
    """MESSAGES with earlier calls and tool results as the template can render them: calls' arguments as dicts for
    a template that knows tools (as transformers passes them), calls and results as text for one that does not."""
    if not any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
        return messages
    return [_for_template(m) if template_knows_tools else _as_text(m) for m in messages]


class ToolGrammar:
    """The compiled calls' grammar; `rule()` gives each row its own parser."""

    def __init__(self, vocab: Vocabulary, grammar, lazy: bool):
        self.vocab, self._grammar, self.lazy = vocab, grammar, lazy

    def rule(self):
        """A row's rule; None where nothing constrains the reply (Llama 3's format under auto)."""
        if self._grammar is None:
            return None
        return LazyRule(self.vocab, self._grammar) if self.lazy else self._grammar.rule()


class LazyRule:
    """Free text until the row writes <tool_call>; then its grammar's rule until the call is closed; then free again."""

    def __init__(self, vocab: Vocabulary, grammar):
        self._vocab, self._grammar = vocab, grammar
        self._tail = b""  # the last bytes written while free (the trigger may span tokens)
        self._active = None  # the call's rule while one is being written

    def restrict(self, scores: np.ndarray) -> np.ndarray:
        return self._active.restrict(scores) if self._active is not None else scores

    def consume(self, token: int) -> None:
        if self._active is not None:
            self._active.consume(token)
            if self._active.complete:  # </tool_call> written
                self._active, self._tail = None, b""
            return
        self._tail = (self._tail + self._vocab.token_bytes(token))[-64:]
        at = self._tail.find(OPEN.encode())
        if at >= 0:
            after = self._tail[at + len(OPEN):]
            if after.strip(b"\n") == b"" and len(after) <= 1:  # the call starts here: constrain it
                self._active = self._grammar.rule()
            self._tail = b""


class ToolText:
    """Streamed content of a reply that may call tools: text is shown until a call may be starting, never after.
    Joined, the pieces are `ToolSet.parse`'s text (trailing blanks wait: a call may follow them)."""

    def __init__(self, call_format: ToolFormat = HERMES):
        self._held, self.calling, self.open = "", False, call_format.open

    def feed(self, piece: str) -> str:
        if self.calling:
            return ""
        text = self._held + piece
        at = text.find(self.open)
        if at >= 0:
            self.calling, self._held = True, ""
            return text[:at].rstrip()
        keep = max((k for k in range(1, len(self.open)) if text.endswith(self.open[:k])), default=0)
        keep = len(text) - len(text[:len(text) - keep].rstrip())  # and the blanks before it
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def finish(self) -> str:
        held, self._held = ("" if self.calling else self._held), ""
        return held


# -- helpers ---------------------------------------------------------------------------------------
def _check_tool(tool: Any, i: int) -> dict:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    if not isinstance(function, dict):
        raise GenerationError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\", \"parameters\"}}}}")
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise GenerationError(f"tools[{i}].function.name must be 1-64 letters, digits, _ or -, got {name!r}")
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise GenerationError(f"tools[{i}].function.parameters must be a JSON schema object")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise GenerationError(f"tools[{i}].function.description must be a string")
    clean = {"name": name, **({"description": description} if description else {}), "parameters": parameters}
    return {"type": "function", "function": clean}


def _arguments(function: dict) -> dict:
    return function["parameters"] if function["parameters"].get("type") else {**function["parameters"], "type": "object"}


def _call(body: str | dict, key: str = "arguments") -> ToolCall | None:
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            return None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(body.get(key, {}), dict):
        return None
    return ToolCall(body["name"], json.dumps(body.get(key, {}), ensure_ascii=False), "call_" + uuid.uuid4().hex[:24])


def _bare_calls(text: str, call_format: ToolFormat) -> list[ToolCall]:
    """Llama 3's calls: JSON objects that begin with call_format.open, one after another (blanks or ';' between)."""
    calls, at, decoder = [], text.find(call_format.open), json.JSONDecoder()
    while at >= 0:
        try:
            body, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            break
        call = _call(body, call_format.key)
        if call is None:
            break
        calls.append(call)
        rest = text[end:].lstrip().removeprefix(";").lstrip()
        at = len(text) - len(rest) if rest.startswith(call_format.open) else -1
    return calls


def _arguments_dict(arguments: Any) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments)
    except (TypeError, json.JSONDecodeError):
        raise GenerationError(f"a tool call's arguments must be a JSON object, got {arguments!r:.60}") from None
    if not isinstance(parsed, dict):
        raise GenerationError(f"a tool call's arguments must be a JSON object, got {arguments!r:.60}")
    return parsed


def _calls_of(message: dict) -> list[dict]:
    """An assistant message's tool_calls as {"name", "arguments": dict}."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise GenerationError("an assistant message's tool_calls must be {\"type\": \"function\", \"function\": "
                                  "{\"name\", \"arguments\"}}")
        calls.append({"name": function["name"], "arguments": _arguments_dict(function.get("arguments", {}))})
    return calls


def _for_template(message: dict) -> dict:
    if message.get("role") != "assistant" or not message.get("tool_calls"):
        return message
    calls = [{"type": "function", "function": c} for c in _calls_of(message)]
    return {**message, "content": message.get("content") or "", "tool_calls": calls}


def _as_text(message: dict) -> dict:
    role = message.get("role")
    if role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message.get('content', '')}\n</tool_response>"}
    if role == "assistant" and message.get("tool_calls"):
        blocks = [f"{OPEN}\n{json.dumps(c, ensure_ascii=False)}\n{CLOSE}" for c in _calls_of(message)]
        content = message.get("content") or ""
        return {"role": "assistant", "content": "\n".join(([content] if content else []) + blocks)}
    return {"role": role, "content": message.get("content") or ""}
