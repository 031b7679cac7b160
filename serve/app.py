"""The HTTP surface: OpenAI's routes and shapes over the served bundles (Starlette).

    GET  /v1/models              POST /v1/chat/completions     POST /v1/completions
    POST /v1/embeddings          POST /v1/rerank (Cohere's and Jina's shape, serve/encoder_routes.py)
    GET  /health                 GET  /metrics (Prometheus text)
    GET  /                       the chat page (serve/static/chat.html: plain HTML and JS, nothing from elsewhere)

/v1/* need `Authorization: Bearer KEY` when the server has a key; /health and /metrics do not
(probes and scrapers; the server binds to loopback unless told otherwise). Every refusal is
OpenAI's error body (serve/errors.py); serve/checks.py holds the checks every route makes.
Handlers tokenize and check; the workers generate, embed and rerank.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgelm.errors import EdgelmError
from edgelm.runtime.encoder import Encoder
from edgelm.runtime.generator import GeneratorParams
from edgelm.runtime.json_schema import Vocabulary
from edgelm.runtime.language_model import LanguageModel
from edgelm.runtime.sampling import TokenLogprob
from edgelm.runtime.tools import ToolCall, ToolText
from edgelm.serve.checks import guard, open_body, served_model, submit
from edgelm.serve.decode_worker import DecodeWorker, Event, Job
from edgelm.serve.embed_worker import EmbedWorker
from edgelm.serve.encoder_routes import embeddings, rerank
from edgelm.serve.errors import APIError, bad_request, error_body
from edgelm.serve.metrics import Metrics
from edgelm.serve.requests import GenerationRequest, parse_chat, parse_completion

log = logging.getLogger("edgelm.serve")
FINGERPRINT = "edgelm"
POLL_S = 0.5  # how often a non-streaming request checks that its client is still there


@dataclass(frozen=True)
class Settings:
    """The part of serve.main.Options the routes read; build() passes every field, so the defaults live in Options only."""

    api_key: str | None
    max_tokens_cap: int | None  # None: the model's context
    max_body_bytes: int


@dataclass
class Served:
    """One bundle under its model name, with the worker that runs it."""

    name: str
    model: LanguageModel | Encoder
    worker: DecodeWorker | EmbedWorker
    created: int

    @property
    def generates(self) -> bool:
        return isinstance(self.model, LanguageModel)


def create_app(served: list[Served], settings: Settings, metrics: Metrics) -> Starlette:
    routes = [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/rerank", rerank, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/", chat_page, methods=["GET"]),
    ]
    handlers = {APIError: _api_error, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=_lifespan)
    app.state.served = {s.name: s for s in served}
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = False
    return CountRequests(app, metrics)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette):
    for s in app.state.served.values():
        s.worker.start()
    yield
    app.state.draining = True
    for s in app.state.served.values():  # in-flight requests have finished (uvicorn waited for them)
        await run_in_threadpool(s.worker.stop, 10.0)


# -- routes ------------------------------------------------------------------------------------
async def list_models(request: Request) -> JSONResponse:
    guard(request)
    data = [{"id": s.name, "object": "model", "created": s.created, "owned_by": "edgelm", "task": s.model.manifest.task}
            for s in request.app.state.served.values()]  # task: which models the chat page offers
    return JSONResponse({"object": "list", "data": data})


async def health(request: Request) -> JSONResponse:
    state = request.app.state
    dead = [s.name for s in state.served.values() if not s.worker.alive()]
    status = "draining" if state.draining else "unhealthy" if dead else "ok"
    body = {"status": status, "models": sorted(state.served)}
    return JSONResponse(body, 200 if status == "ok" else 503)


async def chat_page(request: Request) -> Response:
    """The chat page; it needs no key itself (it asks the browser's user for one when the API does)."""
    page = (importlib.resources.files("edgelm.serve") / "static" / "chat.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                                   "script-src 'unsafe-inline'"})


async def metrics_text(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=metrics.content_type)


async def chat_completions(request: Request) -> Response:
    return await _generate(request, parse_chat)


async def completions(request: Request) -> Response:
    return await _generate(request, parse_completion)


# -- generation --------------------------------------------------------------------------------
async def _generate(request: Request, parse) -> Response:
    req: GenerationRequest = parse(await open_body(request))
    served = served_model(request, req.model, generates=True)
    lm: LanguageModel = served.model
    if req.chat and not lm.manifest.chat_template_file:
        raise bad_request(f"model '{req.model}' has no chat template; send a plain prompt to /v1/completions", "messages")
    if req.tools is not None:  # calls in the format this model's template defines
        req = replace(req, tools=req.tools.using(lm.tool_format))
    prompts = await run_in_threadpool(_encode, lm, req)
    max_new = _budget(request, lm, req, prompts)
    try:
        params = lm.params(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p, seed=req.seed)
    except EdgelmError as e:
        raise bad_request(str(e)) from None
    grammar = await run_in_threadpool(_grammar, lm, req) if req.json_schema is not None or req.tools else None
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    sink = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)  # noqa: E731  (called from the worker)
    jobs = [Job(ids, _choice(params, i), req.stop, sink, index=p * req.n + i, grammar=grammar, logprobs=req.logprobs)
            for p, ids in enumerate(prompts) for i in range(req.n)]  # OpenAI's choice order
    submit(lambda: served.worker.submit(jobs))
    vocab = await run_in_threadpool(lm.vocabulary) if req.logprobs is not None else None  # tokens' bytes
    shape = Shape(req, "chatcmpl-" if req.chat else "cmpl-", vocab)
    if req.stream:
        return StreamingResponse(_stream(shape, jobs, events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    finals = await _collect(request, jobs, events)
    if finals is None:  # the client went away; nobody reads this
        return Response(status_code=499)
    return JSONResponse(shape.whole(finals))


def _encode(lm: LanguageModel, req: GenerationRequest) -> list[list[int]]:
    try:
        return [lm.encode(p, tools=req.tools) for p in req.prompts]  # chat: the template; completions: text with special tokens
    except EdgelmError as e:
        raise bad_request(str(e), "messages" if req.chat else "prompt") from None


def _choice(params: GeneratorParams, i: int) -> GeneratorParams:
    """Choice I of a prompt: with a seed, seed + I (choice 0 is what the seed alone gives); the prompt's prefill is
    shared, as the open batch copies a running row's keys into the next row that starts with them."""
    return replace(params, seed=params.seed + i) if params.seed is not None and i else params


def _grammar(lm: LanguageModel, req: GenerationRequest):
    """What each row's rule comes from: the response_format's schema or the tools' calls (`.rule()`)."""
    try:  # the first one indexes the vocabulary (~0.3 s), then ~1 ms per grammar
        return req.tools.grammar(lm.vocabulary()) if req.tools else lm.json_grammar(req.json_schema)
    except EdgelmError as e:
        raise bad_request(str(e), "tools" if req.tools else "response_format") from None


def _budget(request: Request, lm: LanguageModel, req: GenerationRequest, prompts: list[list[int]]) -> int:
    """max_tokens as asked (checked against the cap and the context), or the bundle's default fitted to both."""
    limit = lm.manifest.max_context
    cap = request.app.state.settings.max_tokens_cap or limit
    longest = max(map(len, prompts))
    param = "messages" if req.chat else "prompt"
    if req.max_tokens is not None:
        if req.max_tokens > cap:
            raise bad_request(f"'max_tokens' is {req.max_tokens}, over this server's cap of {cap}", "max_tokens")
        if longest + req.max_tokens > limit:
            raise bad_request(f"This model's maximum context length is {limit} tokens. However, you requested "
                              f"{longest + req.max_tokens} tokens ({longest} in the {param}, {req.max_tokens} in the "
                              "completion). Reduce the prompt or max_tokens.", param, "context_length_exceeded")
        return req.max_tokens
    if longest >= limit:
        raise bad_request(f"This model's maximum context length is {limit} tokens. However, your {param} has "
                          f"{longest} tokens. Shorten it.", param, "context_length_exceeded")
    return max(1, min(lm.params().max_new_tokens, cap, limit - longest))


async def _collect(request: Request, jobs: list[Job], events: asyncio.Queue) -> list[dict] | None:
    """Every job's text and last event; None if the client disconnected first (its jobs are cancelled)."""
    texts, finals, left = [[] for _ in jobs], [None] * len(jobs), len(jobs)
    logprobs = [[] for _ in jobs]
    try:
        while left:
            try:
                event: Event = await asyncio.wait_for(events.get(), POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return None
                continue
            if event.error:
                raise APIError(500, event.error, type="server_error")
            texts[event.index].append(event.text)
            logprobs[event.index].extend(event.logprobs)
            if event.finish_reason:
                finals[event.index] = {"text": "".join(texts[event.index]), "event": event, "logprobs": logprobs[event.index]}
                left -= 1
        return finals
    finally:
        for job in jobs:
            job.cancel()  # a no-op for jobs that finished: they have left the batch


async def _stream(shape: "Shape", jobs: list[Job], events: asyncio.Queue):
    """Server-sent events: a role chunk, content deltas, a finish chunk per choice, [usage], [DONE].

    A client that disconnects cancels this generator (Starlette), which cancels its jobs: their
    rows leave the batch at the next step.
    """
    calls = shape.req.tools is not None
    shown = {job.index: ToolText(shape.req.tools.call_format) for job in jobs} if calls else {}  # content stops where a call begins
    raw = {job.index: [] for job in jobs}
    try:
        for job in jobs:
            yield _sse(shape.first(job.index))
        left, finals = len(jobs), []
        while left:
            event: Event = await events.get()
            if event.error:
                yield _sse(error_body(event.error, "server_error"))
                return
            text = event.text
            if calls:
                raw[event.index].append(text)
                text = shown[event.index].feed(text) + (shown[event.index].finish() if event.finish_reason else "")
            if text or event.logprobs:
                yield _sse(shape.piece(event.index, text, logprobs=event.logprobs))
            if event.finish_reason:
                finish = event.finish_reason
                made = shape.req.tools.parse("".join(raw[event.index]))[1] if calls else []
                if made:
                    yield _sse(shape.calls_chunk(event.index, made))
                    finish = "tool_calls" if finish == "stop" else finish
                yield _sse(shape.piece(event.index, "", finish))
                finals.append(event)
                left -= 1
        if shape.req.include_usage:
            yield _sse(shape.usage_chunk(finals))
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancel()


class Shape:
    """OpenAI's response and chunk objects for chat.completions or completions."""

    def __init__(self, req: GenerationRequest, prefix: str, vocab: Vocabulary | None = None):
        self.req = req
        self.vocab = vocab  # tokens' bytes, when the request asked for logprobs
        self.offsets: dict[int, int] = {}  # completions' text_offset so far, per choice
        self.base = {"id": prefix + uuid.uuid4().hex, "created": int(time.time()), "model": req.model,
                     "system_fingerprint": FINGERPRINT}

    def first(self, index: int) -> dict:
        return self._chunk(index, {"role": "assistant", "content": ""}, None) if self.req.chat else self._chunk(index, "", None)

    def piece(self, index: int, text: str, finish: str | None = None, logprobs: Sequence[TokenLogprob] = ()) -> dict:
        return self._chunk(index, ({"content": text} if text else {}) if self.req.chat else text, finish, logprobs)

    def _chunk(self, index: int, delta: Any, finish: str | None, logprobs: Sequence[TokenLogprob] = ()) -> dict:
        choice = {"index": index, "delta": delta} if self.req.chat else {"index": index, "text": delta}
        choice.update(logprobs=self.logprobs(index, logprobs) if logprobs else None, finish_reason=finish)
        chunk = dict(self.base, object="chat.completion.chunk" if self.req.chat else "text_completion", choices=[choice])
        if self.req.include_usage:
            chunk["usage"] = None
        return chunk

    def calls_chunk(self, index: int, calls: list[ToolCall]) -> dict:
        """The reply's calls as one delta (each call whole: name and arguments in one piece)."""
        delta = {"tool_calls": [{"index": k, **_call(c)} for k, c in enumerate(calls)]}
        return self._chunk(index, delta, None)

    def logprobs(self, index: int, entries: Sequence[TokenLogprob]) -> dict:
        """OpenAI's logprobs object: chat's {"content": [...]}, or the legacy completions' parallel lists."""
        if self.req.chat:
            return {"content": [{**self._token(e.token, e.logprob), "top_logprobs": [self._token(t, v) for t, v in e.top]}
                                for e in entries], "refusal": None}
        texts = [self._text(e.token) for e in entries]
        offsets = []
        for text in texts:
            offsets.append(self.offsets.get(index, 0))
            self.offsets[index] = offsets[-1] + len(text)
        return {"tokens": texts, "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{self._text(t): v for t, v in e.top} for e in entries], "text_offset": offsets}

    def _token(self, token: int, logprob: float) -> dict:
        raw = self.vocab.token_bytes(token)
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    def _text(self, token: int) -> str:
        return self.vocab.token_bytes(token).decode("utf-8", "replace")

    def usage_chunk(self, finals: list[Event]) -> dict:
        return dict(self.base, object="chat.completion.chunk" if self.req.chat else "text_completion", choices=[],
                    usage=_usage(finals, self.req.n))

    def whole(self, finals: list[dict]) -> dict:
        choices = []
        for i, final in enumerate(finals):
            choice: dict[str, Any] = {"index": i}
            finish = final["event"].finish_reason
            if self.req.chat:
                content, calls = self.req.tools.parse(final["text"]) if self.req.tools else (final["text"], [])
                choice["message"] = {"role": "assistant", "content": content or (None if calls else ""), "refusal": None}
                if calls:
                    choice["message"]["tool_calls"] = [_call(c) for c in calls]
                    finish = "tool_calls" if finish == "stop" else finish
            else:
                choice["text"] = final["text"]
            asked = self.req.logprobs is not None
            choice.update(logprobs=self.logprobs(i, final["logprobs"]) if asked else None, finish_reason=finish)
            choices.append(choice)
        return dict(self.base, object="chat.completion" if self.req.chat else "text_completion", choices=choices,
                    usage=_usage([f["event"] for f in finals], self.req.n))


def _call(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _usage(finals: list[Event], n: int) -> dict:
    """Token counts; each prompt counts once, whatever its number of choices (as OpenAI counts them)."""
    prompt = sum(e.prompt_tokens for e in finals if e.index % n == 0)
    completion = sum(e.completion_tokens for e in finals)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# -- errors ------------------------------------------------------------------------------------
async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return e.response()


async def _http_error(request: Request, e: HTTPException) -> JSONResponse:
    message = {404: f"no route {request.url.path}; see GET /v1/models", 405: f"{request.method} is not allowed on {request.url.path}"}
    return JSONResponse(error_body(message.get(e.status_code, str(e.detail))), e.status_code)


async def _server_error(request: Request, e: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse(error_body(f"internal server error: {type(e).__name__}: {e}", "server_error"), 500)


# -- request counting --------------------------------------------------------------------------
KNOWN = {"/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/health", "/metrics", "/"}


class CountRequests:
    """ASGI middleware: edgelm_requests_total{model, endpoint, status} for every HTTP request."""

    def __init__(self, app: Starlette, metrics: Metrics):
        self.app, self.metrics = app, metrics

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            model = scope.get("state", {}).get("model", "")
            endpoint = scope["path"] if scope["path"] in KNOWN else "other"
            self.metrics.requests.labels(model if model in self.app.state.served else "", endpoint, str(status)).inc()
