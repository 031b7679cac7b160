"""Verify an exported graph against the torch model it came from, on the same inputs.

Decoders: max abs logit difference on a prompt, and the first 32 greedy tokens equal through
the KV-cache path (prefill, then one token per step, as the runtime decodes) to transformers'
generate. Encoders: max abs difference of the task output, cosine of pooled embeddings, and
argmax agreement for classifiers. Both: the bundle's tokenizer.json gives transformers' ids.
Any failed check raises ParityError listing all of them; export then writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgelm.errors import ParityError
from edgelm.export.loading import hf_model_of
from edgelm.runtime.decoder import DecoderGraph, greedy_continuation
from edgelm.runtime.manifest import Manifest

GREEDY_TOKENS = 32
ATOL, RTOL = 1e-3, 1e-3  # |onnx - torch| <= ATOL + RTOL * max|torch|
MIN_COSINE = 0.9999
DECODER_PROMPT = "What is the capital of France?"
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
    texts = [DECODER_PROMPT, *ENCODER_TEXTS, _chat_text(tokenizer)]
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
        failed.append(f"greedy tokens diverge from transformers at step {r['greedy_first_mismatch']}")
    if r.get("min_cosine", 1.0) < MIN_COSINE:
        failed.append(f"embedding cosine {r['min_cosine']:.6f} is below {MIN_COSINE}")
    if r.get("argmax_agreement", 1.0) < 1.0:
        failed.append(f"predicted classes agree on only {r['argmax_agreement']:.1%} of outputs")
    if not r["weights_stored_once"]:
        failed.append(f"graph stores {r['stored_weight_elements']} weight elements for {r['parameters']} parameters (a weight is duplicated)")
    return failed


def _chat_text(tokenizer: Any) -> str:
    """The verification prompt rendered by the chat template (the prompt itself if none)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": DECODER_PROMPT}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return DECODER_PROMPT


def _decoder_prompt_ids(tokenizer: Any) -> list[int]:
    """Prompt ids as transformers builds them: a rendered chat template gets no extra special tokens."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer(_chat_text(tokenizer), add_special_tokens=False)["input_ids"]
    return tokenizer(DECODER_PROMPT)["input_ids"]


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

    prompt_ids = _decoder_prompt_ids(tokenizer)
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        reference = model(ids).logits.numpy()  # (1, seq, vocab)
        greedy = GenerationConfig(max_new_tokens=GREEDY_TOKENS, do_sample=False, num_beams=1,
                                  eos_token_id=None, pad_token_id=0)  # no early stop: compare all 32
        torch_tokens = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=greedy)
    torch_tokens = torch_tokens[0, len(prompt_ids):].tolist()
    graph = DecoderGraph(session, manifest)
    onnx_logits = graph.forward(graph.new_cache(batch=1), np.asarray([prompt_ids]))
    onnx_tokens = greedy_continuation(graph, prompt_ids, GREEDY_TOKENS)
    mismatch = next((i for i, (a, b) in enumerate(zip(torch_tokens, onnx_tokens)) if a != b), None)
    if mismatch is None and len(torch_tokens) != len(onnx_tokens):
        mismatch = min(len(torch_tokens), len(onnx_tokens))
    return {
        "prompt_tokens": len(prompt_ids),
        "max_abs_diff": float(np.abs(onnx_logits - reference).max()),
        "tolerance": _tolerance(reference),
        "greedy_tokens": GREEDY_TOKENS,
        "greedy_equal": mismatch is None,
        "greedy_first_mismatch": mismatch,
        "greedy_text": tokenizer.decode(onnx_tokens),
    }


def _verify_encoder(model: Any, tokenizer: Any, session: Any, manifest: Manifest) -> dict[str, Any]:
    import torch

    texts = list(ENCODER_TEXTS)
    batch = tokenizer(texts, padding=True, return_tensors="np")
    feed = {name: batch.get(name, np.zeros_like(batch["input_ids"])).astype(np.int64) for name in manifest.input_names()}
    if manifest.pooling is not None:
        reference = model.encode(texts, convert_to_numpy=True, batch_size=len(texts))  # (batch, dim)
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
