"""The encoder routes: POST /v1/embeddings (OpenAI's shape) and POST /v1/rerank (Cohere's and Jina's).

Each handler checks the request, tokenizes off the event loop (to count tokens and refuse bad text
with a 400), hands the texts to the bundle's EmbedWorker, and awaits its answer.

    /v1/rerank  {"model", "query", "documents": [str], "top_n"?, "return_documents"?}
            ->  {"model", "results": [{"index", "relevance_score", "document"?: {"text"}}], "usage"}

Reranking cuts a (query, document) pair at the model's max_context, as sentence-transformers'
CrossEncoder does and Cohere and Jina do; embeddings refuse a text over it (OpenAI's behaviour).
"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from edgelm.errors import EdgelmError
from edgelm.runtime.ranking import ranked, reranker_problem
from edgelm.serve.checks import open_body, served_model, submit
from edgelm.serve.embed_worker import EmbedJob, RerankJob
from edgelm.serve.errors import APIError, bad_request
from edgelm.serve.requests import parse_embedding, parse_rerank


async def embeddings(request: Request) -> JSONResponse:
    req = parse_embedding(await open_body(request))
    target = served_model(request, req.model, generates=False)
    encoder = target.model
    if encoder.task != "feature-extraction":
        raise bad_request(f"model '{req.model}' is a {encoder.task} bundle; /v1/embeddings needs a feature-extraction one", "model")
    try:
        counts = await run_in_threadpool(encoder.count_tokens, req.texts, req.prompt_name)
    except EdgelmError as e:  # an unknown prompt name
        raise bad_request(str(e), "prompt_name") from None
    limit = encoder.manifest.max_context
    over = [i for i, n in enumerate(counts) if n > limit]
    if over:
        raise bad_request(f"input {over[0]} has {counts[over[0]]} tokens; this model's maximum context length is {limit} tokens. "
                          "Shorten it", "input", "context_length_exceeded")
    vectors = await _run(target, lambda finish: EmbedJob(req.texts, finish, req.prompt_name))
    data = [{"object": "embedding", "index": i, "embedding": _vector(v, req.base64)} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
    return JSONResponse({"object": "list", "data": data, "model": req.model, "usage": usage})


async def rerank(request: Request) -> JSONResponse:
    req = parse_rerank(await open_body(request))
    target = served_model(request, req.model, generates=False)
    problem = reranker_problem(target.model.manifest, f"model '{req.model}'")
    if problem:
        raise bad_request(problem, "model")
    pairs = [(req.query, d) for d in req.documents]
    try:
        ids = await run_in_threadpool(target.model.encode_pairs, pairs)  # the tokens the model reads: usage
    except EdgelmError as e:  # text that is not valid Unicode
        raise bad_request(str(e), "documents") from None
    scores = await _run(target, lambda finish: RerankJob(pairs, finish))
    results = []
    for r in ranked(scores, req.top_n):
        result = {"index": r["index"], "relevance_score": r["score"]}
        if req.return_documents:
            result["document"] = {"text": req.documents[r["index"]]}
        results.append(result)
    tokens = sum(map(len, ids))
    return JSONResponse({"model": req.model, "results": results, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _run(target, job_for) -> np.ndarray:
    """Submit the job JOB_FOR(finish) to TARGET's worker and await its result (a 500 when the model failed)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish(result, error):  # called on the worker thread
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result((result, error)))

    submit(lambda: target.worker.submit([job_for(finish)]))
    result, error = await done
    if error:
        raise APIError(500, error, type="server_error")
    return result


def _vector(v: np.ndarray, as_base64: bool):
    """OpenAI's two encodings: a list of floats, or base64 of little-endian float32 bytes."""
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii") if as_base64 else v.astype(float).tolist()
