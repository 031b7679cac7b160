"""Verify an exported graph against the torch model it came from, on the same inputs.

Decoders: max abs logit difference on each verification prompt, and the first 32 greedy tokens
equal through the KV-cache path (prefill, then one token per step, as the runtime decodes) to
transformers' generate; like generate, a prompt's comparison ends at eos (past eos a chat model
continues out of distribution, where near-ties make argmax meaningless).
Encoders: max abs difference of the task output, cosine of pooled embeddings, and argmax
agreement for classifiers. Both: the bundle's tokenizer.json gives transformers' ids.
Any failed check raises ParityError listing all of them; export then writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgelm.errors import ParityError
from edgelm.export.loading import hf_model_of
from edgelm.runtime.decoder import DecoderGraph
from edgelm.runtime.generator import greedy_continuation
from edgelm.runtime.manifest import Manifest
from edgelm.runtime.prompts import PROMPT_LENGTH

GREEDY_TOKENS = 32
ATOL, RTOL = 1e-3, 1e-3  # |onnx - torch| <= ATOL + RTOL * max|torch|
MIN_COSINE = 0.9999
DECODER_PROMPTS = (
    "What is the capital of France?",  # a short, checkable answer
    "Write a short story about a robot who learns to paint.",  # a long one: 32 tokens before eos
)
ENCODER_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and largest city of France.",
    "edgelm ships language models to small machines without torch.",
    "short",
)
# An export may hold small extra constants; a duplicated weight matrix is far above this.
STORED_ONCE_SLACK = 1.02


def verify(model: Any, tokenizer: Any, session: Any, manifest: Manifest, bundle_dir: Path,
           stored_elements: int) -> dict[str, Any]:
    """Run every check; returns the results for the manifest, or raises ParityError."""
    checks = _verify_decoder if manifest.is_decoder else _verify_encoder
    texts = [*DECODER_PROMPTS, *ENCODER_TEXTS, *(_chat_text(tokenizer, p) for p in DECODER_PROMPTS)]
    results = {"tokenizer_ids_equal": _tokenizer_matches(tokenizer, bundle_dir / manifest.tokenizer_file, texts)}
    results.update(checks(model, tokenizer, session, manifest))
    parameters = sum(p.numel() for p in hf_model_of(model).parameters())
    results.update(parameters=int(parameters), stored_weight_elements=int(stored_elements),
                   weights_stored_once=bool(stored_elements <= parameters * STORED_ONCE_SLACK + 65536))
    failures = _failures(results)
    results["passed"] = not failures
    if failures:
        raise ParityError(*failures, "the exported graph does not match the model; nothing was written")
    return results


def _failures(r: dict[str, Any]) -> list[str]:
    failed = []
    if not r["tokenizer_ids_equal"]:
        failed.append("the bundle's tokenizer.json gives other token ids than transformers' tokenizer")
    if r["max_abs_diff"] > r["tolerance"]:
        failed.append(f"max abs difference {r['max_abs_diff']:.3g} exceeds tolerance {r['tolerance']:.3g}")
    if r.get("greedy_equal") is False:
        prompt, step = r["greedy_first_mismatch"]
        failed.append(f"greedy tokens diverge from transformers at step {step} of verification prompt {prompt}")
    if r.get("min_cosine", 1.0) < MIN_COSINE:
        failed.append(f"embedding cosine {r['min_cosine']:.6f} is below {MIN_COSINE}")
    if r.get("argmax_agreement", 1.0) < 1.0:
        failed.append(f"predicted classes agree on only {r['argmax_agreement']:.1%} of outputs")
    if not r["weights_stored_once"]:
        failed.append(f"graph stores {r['stored_weight_elements']} weight elements for {r['parameters']} parameters (a weight is duplicated)")
    return failed


def _chat_text(tokenizer: Any, prompt: str) -> str:
    """PROMPT rendered by the chat template (PROMPT itself if there is none)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt


def _decoder_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids as transformers builds them: a rendered chat template gets no extra special tokens."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(_chat_text(tokenizer, prompt), add_special_tokens=not has_template)["input_ids"]


def _tokenizer_matches(tokenizer: Any, tokenizer_json: Path, texts: list[str]) -> bool:
    from tokenizers import Tokenizer

    bundle = Tokenizer.from_file(str(tokenizer_json))
    return all(
        bundle.encode(t, add_special_tokens=special).ids == tokenizer(t, add_special_tokens=special)["input_ids"]
        for t in texts for special in (True, False)
    )


def _tolerance(reference: np.ndarray) -> float:
    return float(ATOL + RTOL * np.abs(reference).max())


def _verify_decoder(model: Any, tokenizer: Any, session: Any, manifest: Manifest) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig

    graph = DecoderGraph(session, manifest)
    eos = manifest.special_tokens.eos
    compared, mismatch, texts, max_diff, tolerance = [], None, [], 0.0, 0.0
    for index, prompt in enumerate(DECODER_PROMPTS):
        prompt_ids = _decoder_prompt_ids(tokenizer, prompt)[: manifest.max_context // 2]
        budget = min(GREEDY_TOKENS, manifest.max_context - len(prompt_ids))  # stay inside the position table
        greedy = GenerationConfig(max_new_tokens=budget, do_sample=False, num_beams=1,
                                  eos_token_id=list(eos) or None, pad_token_id=manifest.special_tokens.pad or 0)
        ids = torch.tensor([prompt_ids])
        with torch.no_grad():
            reference = model(ids).logits.numpy()  # (1, seq, vocab)
            torch_tokens = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=greedy)
        torch_tokens = torch_tokens[0, len(prompt_ids):].tolist()
        onnx_logits = graph.score(prompt_ids)[None]  # prefill only: (1, seq, vocab)
        max_diff = max(max_diff, float(np.abs(onnx_logits - reference).max()))
        tolerance = max(tolerance, _tolerance(reference))
        onnx_tokens = greedy_continuation(graph, prompt_ids, budget, stop_ids=eos)
        step = next((i for i, (a, b) in enumerate(zip(torch_tokens, onnx_tokens)) if a != b), None)
        if step is None and len(torch_tokens) != len(onnx_tokens):
            step = min(len(torch_tokens), len(onnx_tokens))
        if step is not None and mismatch is None:
            mismatch = [index, step]
        compared.append(len(torch_tokens))
        texts.append(tokenizer.decode(onnx_tokens, skip_special_tokens=True))
    return {
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "greedy_tokens": compared,  # per prompt; fewer than 32 where the model ended with eos
        "greedy_equal": mismatch is None,
        "greedy_first_mismatch": mismatch,  # [prompt index, step] or null
        "greedy_text": texts[0],
    }


def _verify_encoder(model: Any, tokenizer: Any, session: Any, manifest: Manifest) -> dict[str, Any]:
    import torch

    texts = list(ENCODER_TEXTS)
    batch = tokenizer(texts, padding=True, return_tensors="np")
    feed = {name: batch.get(name, np.zeros_like(batch["input_ids"])).astype(np.int64) for name in manifest.input_names()}
    if PROMPT_LENGTH in feed:  # include_prompt=False pooling: no prompt here, so it skips no token
        feed[PROMPT_LENGTH] = np.zeros(1, dtype=np.int64)  # (1,)
    if manifest.pooling is not None:
        # prompt="": the texts as they are, not with the model's default prompt (the graph is fed them as they are)
        reference = model.encode(texts, prompt="", convert_to_numpy=True, batch_size=len(texts))  # (batch, dim)
        onnx_out = session.run([manifest.pooling.output], feed)[0]
        cosine = np.sum(reference * onnx_out, 1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(onnx_out, axis=1))
        return {"texts": len(texts), "max_abs_diff": float(np.abs(onnx_out - reference).max()),
                "tolerance": _tolerance(reference), "min_cosine": float(cosine.min())}
    with torch.no_grad():
        torch_batch = {k: torch.from_numpy(v) for k, v in feed.items()}
        reference = model(**torch_batch).logits.numpy()
    onnx_out = session.run(["logits"], feed)[0]
    real = batch["attention_mask"].astype(bool)
    agree = onnx_out.argmax(-1) == reference.argmax(-1)  # (batch,) or (batch, seq)
    agreement = agree[real].mean() if agree.ndim == 2 else agree.mean()
    diff = np.abs(onnx_out - reference)
    max_diff = diff[real].max() if diff.ndim == 3 else diff.max()  # padded positions are not compared
    return {"texts": len(texts), "max_abs_diff": float(max_diff), "tolerance": _tolerance(reference),
            "argmax_agreement": float(agreement)}
