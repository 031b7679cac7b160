"""Request bodies of the OpenAI API (and the /v1/rerank body Cohere and Jina use), checked field by field into typed requests.

Every problem is a 400 naming the field (`param`) in OpenAI's error body; fields this server does
not implement are refused by name when they would change the answer (functions, echo, logit_bias),
and ignored when they only tune an OpenAI-side feature (user, store, metadata).
Sampling ranges are OpenAI's (temperature 0..2, top_p in (0, 1]); an unset field takes the bundle's
generation defaults, as `LanguageModel.generate` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgelm.errors import GenerationError
from edgelm.runtime.json_schema import JSON_OBJECT
from edgelm.runtime.sampling import MAX_TOP_LOGPROBS
from edgelm.runtime.tools import ToolSet
from edgelm.serve.errors import bad_request

MAX_STOPS = 4  # OpenAI's limit on stop strings
MAX_N = 128  # OpenAI's limit on choices per prompt
ROLES = {"system", "user", "assistant", "tool", "developer"}  # developer is OpenAI's newer name for system
UNSUPPORTED = {  # field -> value that is fine (anything else gets a 400)
    "functions": (None, []), "echo": (None, False), "suffix": (None, ""), "best_of": (None, 1),
    "logit_bias": (None, {}),
}
MAX_COMPLETION_LOGPROBS = 5  # the legacy completions API's limit


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    prompts: list[Any]  # chat: one list of messages; completions: one or more strings
    chat: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    json_schema: dict | None = None  # response_format json_schema's schema (json_object: any object)
    n: int = 1  # choices per prompt
    tools: ToolSet | None = None  # the functions a reply may call (chat only)
    logprobs: int | None = None  # None: off; else each token's logprob and this many alternatives


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: list[str]
    single: bool
    base64: bool
    prompt_name: str | None = None  # a prompt of the bundle's manifest, as text-embeddings-inference takes it


@dataclass(frozen=True)
class RerankRequest:
    model: str
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool


def model_name(body: dict) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("'model' is required: the name of a served model (GET /v1/models lists them)", "model")
    return name


def parse_chat(body: dict) -> GenerationRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    return _generation(body, [[_message(m, i) for i, m in enumerate(messages)]], chat=True)


def parse_completion(body: dict) -> GenerationRequest:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise bad_request("'prompt' must be a string or a non-empty list of strings (token arrays are not supported)", "prompt")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise bad_request(f"prompt {i} is empty; send some text", "prompt")
    return _generation(body, prompts, chat=False)


def parse_embedding(body: dict) -> EmbeddingRequest:
    text = body.get("input")
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request("'input' must be a string or a non-empty list of strings (token arrays are not supported)", "input")
    if any(not t for t in texts):
        raise bad_request("'input' holds an empty string; send some text", "input")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64", None):
        raise bad_request(f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", "encoding_format")
    if body.get("dimensions") is not None:
        raise bad_request("'dimensions' is not supported: this model's vectors have a fixed size", "dimensions")
    prompt_name = _typed(body, "prompt_name", str, None)
    return EmbeddingRequest(model_name(body), texts, isinstance(text, str), fmt == "base64", prompt_name)


def parse_rerank(body: dict) -> RerankRequest:
    """Cohere's and Jina's body: {"model", "query", "documents": [str], "top_n"?, "return_documents"?}."""
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad_request("'query' must be a non-empty string", "query")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
        raise bad_request("'documents' must be a non-empty list of strings", "documents")
    blank = next((i for i, d in enumerate(documents) if not d.strip()), None)
    if blank is not None:
        raise bad_request(f"documents[{blank}] is empty; send some text", "documents")
    return RerankRequest(model_name(body), query, documents, _whole(body, "top_n", low=1),
                         _typed(body, "return_documents", bool, False))


def _generation(body: dict, prompts: list[Any], chat: bool) -> GenerationRequest:
    _refuse_unsupported(body)
    n = _whole(body, "n", low=1) or 1
    if n > MAX_N:
        raise bad_request(f"'n' must be at most {MAX_N}, got {n}", "n")
    limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    stream = _typed(body, "stream", bool, False)
    options = _typed(body, "stream_options", dict, None) or {}
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise bad_request("'stream_options.include_usage' must be true or false", "stream_options")
    return GenerationRequest(
        model=model_name(body), prompts=prompts, chat=chat,
        max_tokens=_whole(body, limit, low=1),
        temperature=_number(body, "temperature", 0.0, 2.0, low_open=False),
        top_p=_number(body, "top_p", 0.0, 1.0, low_open=True),
        seed=_whole(body, "seed", low=None),
        stop=_stops(body.get("stop")), stream=stream, include_usage=include_usage,
        json_schema=_response_schema(body.get("response_format")), n=n, logprobs=_logprobs(body, chat),
        tools=_tools(body) if chat else _no_tools(body),
    )


def _no_tools(body: dict) -> None:
    if body.get("tools") or body.get("tool_choice") not in (None, "none"):
        raise bad_request("'tools' work on /v1/chat/completions (the chat template renders them)", "tools")


def _tools(body: dict) -> ToolSet | None:
    try:
        toolset = ToolSet.of(body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls", True))
    except GenerationError as e:
        raise bad_request(str(e), "tool_choice" if "tool_choice" in str(e) else "tools") from None
    if toolset is not None and body.get("response_format") not in (None, {"type": "text"}):
        raise bad_request("'response_format' and 'tools' together are not supported; send one", "response_format")
    return toolset


def _logprobs(body: dict, chat: bool) -> int | None:
    """Chat: logprobs true/false and top_logprobs 0-20; completions (the legacy API): logprobs 0-5 alternatives."""
    if not chat:
        value = _whole(body, "logprobs", low=0)
        if value is not None and value > MAX_COMPLETION_LOGPROBS:
            raise bad_request(f"'logprobs' must be at most {MAX_COMPLETION_LOGPROBS}, got {value}", "logprobs")
        return value
    wanted = _typed(body, "logprobs", bool, False)
    top = _whole(body, "top_logprobs", low=0)
    if top is not None and top > MAX_TOP_LOGPROBS:
        raise bad_request(f"'top_logprobs' must be at most {MAX_TOP_LOGPROBS}, got {top}", "top_logprobs")
    if top and not wanted:
        raise bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return (top or 0) if wanted else None


def _response_schema(fmt: Any) -> dict | None:
    """OpenAI's response_format -> the JSON schema the output must follow (None: free text)."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT  # any JSON object
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("'response_format.json_schema.schema' must be a JSON schema object", "response_format")
        return schema
    raise bad_request("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                      "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}", "response_format")


def _message(m: Any, i: int) -> dict[str, Any]:
    """One chat message; content as a string or a list of text parts (OpenAI's two shapes). An assistant message
    that called tools keeps its tool_calls (its content may be null); a tool message its tool_call_id."""
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise bad_request(f"messages[{i}] must be an object with a role in {', '.join(sorted(ROLES))}", "messages")
    calls = m.get("tool_calls") if m["role"] == "assistant" else None
    if calls is not None and (not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls)):
        raise bad_request(f"messages[{i}].tool_calls must be a list of tool calls", "messages")
    content = m.get("content")
    if calls and content is None:
        return {"role": "assistant", "content": None, "tool_calls": calls}
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise bad_request(f"messages[{i}].content parts must all be {{\"type\": \"text\", \"text\": ...}}", "messages")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise bad_request(f"messages[{i}].content must be a string or a list of text parts", "messages")
    message = {"role": "system" if m["role"] == "developer" else m["role"], "content": content}
    if calls:
        message["tool_calls"] = calls
    if m["role"] == "tool" and isinstance(m.get("tool_call_id"), str):
        message["tool_call_id"] = m["tool_call_id"]
    return message


def _refuse_unsupported(body: dict) -> None:
    for name, fine in UNSUPPORTED.items():
        if name in body and body[name] not in fine:
            raise bad_request(f"'{name}' is not supported by this server; leave it out", name)


def _typed(body: dict, name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise bad_request(f"'{name}' must be {kind.__name__}, got {type(value).__name__}", name)
    return value


def _whole(body: dict, name: str, low: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        raise bad_request(f"'{name}' must be a whole number{f' >= {low}' if low is not None else ''}, got {value!r}", name)
    return value


def _number(body: dict, name: str, low: float, high: float, low_open: bool) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not ((low < value) if low_open else (low <= value)) or value > high:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise bad_request(f"'{name}' must be a number in {bounds}, got {value!r}", name)
    return float(value)


def _stops(stop: Any) -> tuple[str, ...]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise bad_request(f"'stop' must be a non-empty string or a list of up to {MAX_STOPS} of them", "stop")
    return tuple(stops)
