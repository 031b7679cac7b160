"""The checks every /v1 route makes before it runs anything: draining, the API key, the body, the model.

Each refusal is an APIError (serve/errors.py), which the app turns into OpenAI's error body.

    body = await open_body(request)                   # 503 draining, 401 key, 413 size, 400 not JSON
    served = served_model(request, name, generates)   # 404 unknown, 400 the wrong kind of bundle
    submit(lambda: served.worker.submit(jobs))        # 429 when --max-queue requests already wait
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

from starlette.requests import Request

from edgelm.runtime.ranking import reranker_problem
from edgelm.serve.errors import APIError, bad_request
from edgelm.serve.worker_thread import QueueFull

if TYPE_CHECKING:
    from edgelm.serve.app import Served


async def open_body(request: Request) -> dict:
    """Refuse when draining or unauthenticated; read the JSON body under the size limit."""
    state = request.app.state
    if state.draining:
        raise APIError(503, "the server is shutting down; retry on another instance", type="server_error",
                       code="server_shutting_down", headers={"Retry-After": "5"})
    guard(request)
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"the request body is not valid JSON ({e}); send a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
    request.state.model = body.get("model") if isinstance(body.get("model"), str) else ""
    return body


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is over this server's limit of {limit} bytes", code="request_too_large")


def guard(request: Request) -> None:
    key = request.app.state.settings.api_key
    if not key:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise APIError(401, "Incorrect or missing API key: send `Authorization: Bearer KEY`", code="invalid_api_key")


def served_model(request: Request, name: str, generates: bool) -> Served:
    served = request.app.state.served.get(name)
    if served is None:
        raise APIError(404, f"The model '{name}' does not exist; this server has {', '.join(sorted(request.app.state.served))}",
                       param="model", code="model_not_found")
    if served.generates != generates:
        route = route_for(served)
        raise bad_request(f"model '{name}' is a {served.model.task} bundle; "
                          + (f"use {route}" if route else "this server has no route for it"), "model")
    return served


def route_for(served: Served) -> str:
    """The route(s) that serve this bundle ('' for none), for an error that sent it to another."""
    if served.generates:
        return "/v1/chat/completions or /v1/completions"
    if served.model.task == "feature-extraction":
        return "/v1/embeddings"
    return "" if reranker_problem(served.model.manifest, served.name) else "/v1/rerank"


def submit(enqueue) -> None:
    try:
        enqueue()
    except QueueFull as e:
        raise APIError(429, f"{e}; retry shortly", type="rate_limit_error", code="rate_limit_exceeded",
                       headers={"Retry-After": "1"}) from None
