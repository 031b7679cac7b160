"""Prometheus metrics of one server (its own registry, so two servers in one process do not mix).

    edgelm_requests_total{model,endpoint,status}     edgelm_prompt_tokens_total{model}
    edgelm_completion_tokens_total{model}           edgelm_queue_depth{model} (waiting for a slot)
    edgelm_running_requests{model} (in the batch)    edgelm_time_to_first_token_seconds{model}
    edgelm_time_per_output_token_seconds{model}      edgelm_embedding_inputs_total{model}
    edgelm_rerank_pairs_total{model} (documents scored)
    edgelm_prefix_cache_hits_total{model}            edgelm_prefix_cache_tokens_reused_total{model}
      (requests whose prompt began with tokens the cache held: a free slot's, another row's, the prefix pool's;
      and the prompt tokens not prefilled)
    edgelm_prefix_pool_bytes{model} (host memory of prefixes kept beyond the slots, --cache-mb)
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edgelm_requests", "HTTP requests answered", ["model", "endpoint", "status"], registry=r)
        self.prompt_tokens = Counter("edgelm_prompt_tokens", "Prompt tokens of finished requests", ["model"], registry=r)
        self.completion_tokens = Counter("edgelm_completion_tokens", "Tokens generated", ["model"], registry=r)
        self.embedding_inputs = Counter("edgelm_embedding_inputs", "Texts embedded", ["model"], registry=r)
        self.rerank_pairs = Counter("edgelm_rerank_pairs", "(query, document) pairs scored", ["model"], registry=r)
        self.prefix_hits = Counter("edgelm_prefix_cache_hits", "Requests that reused a cached prompt prefix", ["model"],
                                   registry=r)
        self.reused_tokens = Counter("edgelm_prefix_cache_tokens_reused", "Prompt tokens taken from the cache, not prefilled",
                                     ["model"], registry=r)
        self.queue_depth = Gauge("edgelm_queue_depth", "Requests waiting for a batch slot", ["model"], registry=r)
        self.running = Gauge("edgelm_running_requests", "Requests in the running batch", ["model"], registry=r)
        self.pool_bytes = Gauge("edgelm_prefix_pool_bytes", "Host memory holding prefixes beyond the batch's slots (--cache-mb)",
                                ["model"], registry=r)
        self.ttft = Histogram("edgelm_time_to_first_token_seconds", "Arrival to first generated token", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.per_token = Histogram("edgelm_time_per_output_token_seconds", "Time between a request's tokens", ["model"],
                                   buckets=TOKEN_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
