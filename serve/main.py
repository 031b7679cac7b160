"""`edgelm serve`: load the bundles, start a worker per bundle, run uvicorn until SIGTERM or Ctrl-C.

SIGTERM (or SIGINT) drains: the listening socket closes (new connections are refused), requests
that arrive on open connections get 503, in-flight requests run to their end for up to
--drain-timeout seconds, then the workers stop and the process exits 0.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edgelm.errors import EdgelmError
from edgelm.extras import require_extra

log = logging.getLogger("edgelm.serve")


class ServeError(EdgelmError):
    """The server cannot start as asked (a missing extra, a bad bundle, a duplicate model name)."""


@dataclass(frozen=True)
class Options:
    """How `edgelm serve` runs, and the one place its defaults are written: the CLI's options read them
    (so this module imports only the standard library and edgelm's own light modules at the top)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    max_tokens_cap: int | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    threads: int | None = None
    provider: str = "auto"
    fast: bool = False  # hash only small files at load
    drain_timeout: float = 30.0
    chunked_prefill: bool = True  # a prompt arriving while others decode prefills in chunks between their steps
    cache_mb: int | None = None  # prefixes kept beyond the slots, per decoder bundle [default: pool_default_mb]
    verbose: bool = False  # print each model's provider and threads at start


def build(bundles: list[Path], names: list[str], options: Options):
    """The ASGI app serving BUNDLES (names: --name values in order, else each folder's name)."""
    require_extra("serve", "serve")
    from edgelm.serve.app import Served, Settings, create_app
    from edgelm.serve.decode_worker import DecodeWorker
    from edgelm.serve.embed_worker import EmbedWorker
    from edgelm.serve.metrics import Metrics
    from edgelm.runtime import load
    from edgelm.runtime.language_model import LanguageModel

    if len(names) > len(bundles):
        raise ServeError(f"{len(names)} --name values for {len(bundles)} bundles; give at most one per bundle")
    if options.max_batch < 1 or options.max_queue < 1:
        raise ServeError("--max-batch and --max-queue must be at least 1")
    chosen = [names[i] if i < len(names) else Path(b).resolve().name for i, b in enumerate(bundles)]
    twice = sorted({n for n in chosen if chosen.count(n) > 1})
    if twice:
        raise ServeError(f"two bundles would be served as {', '.join(twice)}; give each a --name")
    metrics, served = Metrics(), []
    for name, path in zip(chosen, bundles):
        model = load(path, provider=options.provider, threads=options.threads, fast=options.fast)
        worker = (DecodeWorker(name, model, options.max_batch, options.max_queue, metrics, options.chunked_prefill,
                               pool_bytes(model, options.cache_mb))
                  if isinstance(model, LanguageModel)
                  else EmbedWorker(name, model, options.max_queue, metrics))
        served.append(Served(name, model, worker, int(time.time())))
    settings = Settings(api_key=options.api_key or None, max_tokens_cap=options.max_tokens_cap,
                        max_body_bytes=options.max_body_bytes)
    return create_app(served, settings, metrics)


DEFAULT_POOL_TOKENS, DEFAULT_POOL_MB = 8192, 256


def pool_bytes(lm, cache_mb: int | None) -> int:
    """--cache-mb in bytes; by default room for 8,192 tokens of this bundle's keys and values, at most 256 MB."""
    if cache_mb is not None:
        return cache_mb * 2**20
    layout = lm.manifest.kv_cache
    per_token = layout.num_layers * 2 * layout.num_kv_heads * layout.head_size * {"float32": 4, "float16": 2, "int8": 1}[layout.dtype]
    return min(DEFAULT_POOL_TOKENS * per_token, DEFAULT_POOL_MB * 2**20)


def serve(bundles: list[Path], names: list[str], options: Options) -> None:
    app = build(bundles, names, options)  # checks the serve extra (uvicorn included) first
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):  # SIGTERM / SIGINT: refuse new requests on open connections too
            app.state.draining = True
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()  # a drained stop exits 0 (uvicorn >= 0.29 re-raises the signal)

    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning",
                            timeout_graceful_shutdown=options.drain_timeout, access_log=False)
    server = DrainingServer(config)
    models = ", ".join(app.state.served)
    print(f"edgelm serve: http://{options.host}:{options.port}/v1 (models: {models}); Ctrl-C or SIGTERM drains and stops",
          flush=True)
    if options.verbose or options.provider == "cuda":
        from edgelm.console import runs_on

        for name, served in app.state.served.items():
            print(f"  {name}: {runs_on(served.model.bundle)}", flush=True)
    server.run()
