"""Runtime building blocks: the sampler and the streaming detokenizer (issue 3 builds on them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from edgelm.errors import GenerationError
from edgelm.runtime.detokenizer import StreamingDetokenizer
from edgelm.runtime.sampling import apply_repetition_penalty, make_sampler

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(3, 50)).astype(np.float32) * 3


def test_temperature_zero_is_argmax():
    assert (make_sampler(0.0)(LOGITS) == LOGITS.argmax(-1)).all()


def test_top_k_1_equals_greedy_at_any_temperature():
    assert (make_sampler(1.7, top_k=1, seed=3)(LOGITS) == LOGITS.argmax(-1)).all()


def test_same_seed_same_tokens_other_seed_other_tokens():
    def run(seed):
        sampler = make_sampler(1.0, seed=seed)
        return [sampler(LOGITS).tolist() for _ in range(20)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def _hf_allowed(temperature, top_k, top_p):
    """Tokens transformers' warpers leave with non-zero probability, per row."""
    scores = torch.from_numpy(LOGITS.copy())
    for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k) if top_k else None,
                   TopPLogitsWarper(top_p) if top_p < 1 else None):
        if warper is not None:
            scores = warper(None, scores)
    return [set(np.flatnonzero(np.isfinite(row.numpy()))) for row in scores]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 5, 1.0), (1.0, 0, 0.5), (1.3, 10, 0.8), (0.5, 0, 0.05)])
def test_sampled_tokens_stay_inside_the_set_transformers_allows(temperature, top_k, top_p):
    allowed = _hf_allowed(temperature, top_k, top_p)
    sampler = make_sampler(temperature, top_k, top_p, seed=0)
    seen = [set() for _ in allowed]
    for _ in range(400):
        for row, token in enumerate(sampler(LOGITS)):
            seen[row].add(int(token))
    for row in range(len(allowed)):
        assert seen[row] <= allowed[row]
        assert len(seen[row]) >= min(2, len(allowed[row]))  # it really samples


def test_sampling_frequencies_follow_the_softmax():
    logits = np.log(np.array([[0.5, 0.3, 0.2]]))
    sampler = make_sampler(1.0, seed=1)
    counts = np.bincount([int(sampler(logits)[0]) for _ in range(4000)], minlength=3) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.2], atol=0.03)


def test_repetition_penalty_matches_transformers():
    seen = [[1, 2, 2, 7], [], [49, 0]]
    ours = apply_repetition_penalty(LOGITS, seen, 1.3)
    processor = RepetitionPenaltyLogitsProcessor(1.3)
    for row, ids in enumerate(seen):
        ref = processor(torch.tensor([ids or [0]]), torch.from_numpy(LOGITS[row:row + 1].copy()))[0].numpy()
        if ids:
            np.testing.assert_allclose(ours[row], ref, rtol=1e-6)
        else:
            np.testing.assert_array_equal(ours[row], LOGITS[row])


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1)])
def test_bad_sampling_values_are_refused(bad):
    with pytest.raises(GenerationError):
        make_sampler(**{"temperature": 1.0, **bad})


@pytest.mark.parametrize("text", ["東京は日本の首都です。雨が降っています。", "rain 🌧️☔ and a 👩‍👩‍👧‍👦 family 🎉", "plain ascii, with spaces  "])
def test_streamed_pieces_concatenate_to_the_full_text(bundles, text):
    out, manifest = bundles("gpt2")  # byte-level BPE: CJK and emoji split across tokens
    tokenizer = Tokenizer.from_file(str(out / manifest.tokenizer_file))
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text) // 2  # many characters really span several tokens
    stream = StreamingDetokenizer(tokenizer)
    pieces = [stream.add(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in p for p in pieces)
