"""The accuracy gate: a quantized bundle against its float bundle, both run through edgelm.runtime.

Decoders: perplexity of both on each text of the evaluation suite (quantize/eval_suite.py: prose,
code, technical, legal, dialogue, German, and the user's --eval-file; non-overlapping windows,
teacher forcing) and its relative increase; next-token top-1 agreement and mean KL divergence
(float || quantized) at every position; the worst and median domain; the first 32 greedy tokens
on a few prompts, side by side. The perplexity limit holds for every domain. Encoders: cosine of embeddings (mean and minimum), or
agreement of predicted labels (classifiers: per text; token classifiers and fill-mask: per
token). A result passes when every number is inside its method's thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from edgelm.quantize.methods import Method, QuantizeOptions

WINDOW = 256  # tokens per perplexity window
GREEDY_TOKENS = 32
PROMPTS = ("What is the capital of France?", "Write a short story about a robot who learns to paint.",
           "Give me three tips for staying focused while studying.")


@dataclass(frozen=True)
class Thresholds:
    max_ppl_increase: float  # relative: 0.03 = perplexity may rise by 3%
    min_mean_cosine: float
    min_min_cosine: float
    min_label_agreement: float


# INT8 as the issue sets it; INT4 from what 4 bits cost a 135M-parameter model (SmolLM2) on every suite domain,
# German most; INT4_MIXED from what llama.cpp's Q4_K_M costs the same model (docs/benchmarks.md, "Decoder quality:
# the evaluation suite against llama.cpp").
THRESHOLDS = {
    Method.INT8_PER_TOKEN: Thresholds(0.03, 0.99, 0.97, 0.95),
    Method.INT8_DYNAMIC: Thresholds(0.03, 0.99, 0.97, 0.95),
    Method.INT8_STATIC: Thresholds(0.03, 0.99, 0.97, 0.95),
    Method.INT8: Thresholds(0.03, 0.99, 0.97, 0.95),
    Method.INT4: Thresholds(0.30, 0.97, 0.90, 0.90),
    Method.INT4_MIXED: Thresholds(0.25, 0.97, 0.90, 0.90),
}


def thresholds_for(options: QuantizeOptions) -> Thresholds:
    """The method's thresholds, with the user's overrides."""
    t = THRESHOLDS[options.method]
    if options.max_ppl_increase is not None:
        t = replace(t, max_ppl_increase=options.max_ppl_increase)
    if options.min_mean_cosine is not None:
        t = replace(t, min_mean_cosine=options.min_mean_cosine)
    return t


# -- decoders ---------------------------------------------------------------------------------
def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of LOGITS (.., vocab), in float64."""
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _log_probs(lm: Any, ids: list[int]) -> np.ndarray:
    """(len(ids), vocab) log-probabilities of the token after each of IDS, teacher-forced (float64)."""
    return log_softmax(lm.graph.score(ids))


def next_token_scores(float_lm: Any, quant_lm: Any, ids: list[int]) -> dict[str, np.ndarray]:
    """Per position of IDS (non-overlapping windows): both models' negative log-likelihoods, whether their top-1
    agree, and KL(float || quantized) of the whole next-token distribution."""
    window = min(WINDOW, float_lm.manifest.max_context)
    parts: dict[str, list[np.ndarray]] = {"nll_float": [], "nll_quantized": [], "agree": [], "kl": []}
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1]
        if len(chunk) < 2:
            break
        a, b = _log_probs(float_lm, chunk[:-1]), _log_probs(quant_lm, chunk[:-1])  # (n, vocab) each
        targets = (np.arange(len(chunk) - 1), chunk[1:])
        parts["nll_float"].append(-a[targets])
        parts["nll_quantized"].append(-b[targets])
        parts["agree"].append(a.argmax(-1) == b.argmax(-1))
        parts["kl"].append((np.exp(a) * (a - b)).sum(-1))
    return {k: np.concatenate(v) for k, v in parts.items()}


def summarize(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Perplexities, their relative increase, top-1 agreement and mean KL of per-position SCORES.

    The KL divergence of the whole next-token distribution is the steadier number: from one text to another an
    int8 bundle's perplexity increase moves by about as much as int8 costs, its KL by a small part of itself.
    """
    ppl_float, ppl_quant = (float(np.exp(scores[k].mean())) for k in ("nll_float", "nll_quantized"))
    return {"eval_tokens": int(scores["kl"].size), "perplexity_float": ppl_float, "perplexity_quantized": ppl_quant,
            "perplexity_increase": ppl_quant / ppl_float - 1, "top1_agreement": float(scores["agree"].mean()),
            "kl_divergence": float(scores["kl"].mean())}


def compare_next_tokens(float_lm: Any, quant_lm: Any, ids: list[int]) -> dict[str, float]:
    """Both models on IDS: `summarize` of `next_token_scores`."""
    return summarize(next_token_scores(float_lm, quant_lm, ids))


def evaluate_decoder(float_lm: Any, quant_lm: Any, texts: dict[str, list[int]], limits: Thresholds,
                     progress: Any = None) -> dict[str, Any]:
    """Every domain of TEXTS scored, the gate judging the worst one's perplexity increase.

    The top-level perplexities, agreement and KL pool every text's tokens; `domains` has each text's own,
    `worst` and `median` the extremes over domains that the gate and the benchmarks quote.
    """
    per_text = {}
    for domain, ids in texts.items():
        per_text[domain] = next_token_scores(float_lm, quant_lm, ids)
        if progress is not None:
            progress(domain)
    pooled = summarize({k: np.concatenate([s[k] for s in per_text.values()]) for k in ("nll_float", "nll_quantized", "agree", "kl")})
    domains = {d: summarize(s) for d, s in per_text.items()}
    increases = {d: r["perplexity_increase"] for d, r in domains.items()}
    worst = max(increases, key=increases.get)
    kls = {d: r["kl_divergence"] for d, r in domains.items()}
    spread = {"worst": {"domain": worst, "perplexity_increase": increases[worst], "kl_divergence": max(kls.values()),
                        "kl_domain": max(kls, key=kls.get)},
              "median": {"perplexity_increase": float(np.median(list(increases.values()))),
                         "kl_divergence": float(np.median(list(kls.values())))}}
    chat = bool(float_lm.manifest.chat_template_file)
    greedy = []
    for prompt in PROMPTS:
        a, b = (lm.complete([prompt], chat=chat, max_new_tokens=GREEDY_TOKENS)[0] for lm in (float_lm, quant_lm))
        same = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), None)
        if same is None and len(a.token_ids) != len(b.token_ids):
            same = min(len(a.token_ids), len(b.token_ids))
        greedy.append({"prompt": prompt, "float": a.text, "quantized": b.text, "first_difference": same})
    failures = [f"perplexity on {d} rose by {r['perplexity_increase']:.1%} ({r['perplexity_float']:.3f} -> "
                f"{r['perplexity_quantized']:.3f}), over the allowed {limits.max_ppl_increase:.1%}"
                for d, r in domains.items() if r["perplexity_increase"] > limits.max_ppl_increase]
    return {**pooled, "domains": domains, **spread, "greedy": greedy, "thresholds": asdict(limits),
            "failures": failures, "passed": not failures}


# -- encoders ---------------------------------------------------------------------------------
def evaluate_encoder(float_enc: Any, quant_enc: Any, texts: list[str], limits: Thresholds) -> dict[str, Any]:
    failures = []
    if float_enc.task == "feature-extraction":
        a, b = float_enc.embed(texts), quant_enc.embed(texts)  # (n, dim)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        mean, low = float(cosine.mean()), float(cosine.min())
        result = {"texts": len(texts), "mean_cosine": mean, "min_cosine": low}
        if mean < limits.min_mean_cosine:
            failures.append(f"mean embedding cosine {mean:.4f} is below {limits.min_mean_cosine}")
        if low < limits.min_min_cosine:
            failures.append(f"minimum embedding cosine {low:.4f} is below {limits.min_min_cosine}")
    else:
        pairs = zip(float_enc.logits(texts), quant_enc.logits(texts))  # per text: (labels,) or (seq, labels|vocab)
        agree = np.concatenate([np.atleast_1d(x.argmax(-1) == y.argmax(-1)) for x, y in pairs])
        result = {"texts": len(texts), "label_agreement": float(agree.mean()), "compared": int(agree.size)}
        if agree.mean() < limits.min_label_agreement:
            failures.append(f"predicted labels agree on {agree.mean():.1%}, below {limits.min_label_agreement:.0%}")
    return {**result, "thresholds": asdict(limits), "failures": failures, "passed": not failures}
