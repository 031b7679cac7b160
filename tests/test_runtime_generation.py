"""The decoder runtime (load -> LanguageModel -> Generator -> KVCache) on tiny models, against transformers.

Every reference is computed by transformers itself on the same ids: greedy and repetition-penalty
generate, tokenizer ids, chat templates. The rest compares the runtime with itself where
transformers has no counterpart: batch vs one by one, stream vs generate, stop strings vs the
uncut text, step-wise vs complete, rewind vs the first run, prefill vs step-by-step decode.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models
from transformers import GenerationConfig

from edgelm.errors import BundleError, GenerationError
from edgelm.runtime import load
from edgelm.runtime.decoder import DecoderGraph
from edgelm.runtime.generator import MIN_COPY, MIN_REUSE, Generator, GeneratorParams
from edgelm.runtime.kv_cache import CHUNK
from tests import tiny

# One tiny decoder per position kind the registry declares (tiny.decoder_samples says why); every family's greedy
# parity, batching and rewind: tests/test_decoder_families.py.
FAMILIES = tiny.decoder_samples()
PROMPTS = ["The quick brown fox", "Rain falls softly on the roof; the kiosk hums along."]
BATCH = ["Paris", "The quick brown fox jumps over", "Once upon a time there was a tiny model that ran on an edge box."]
CHINESE, EMOJI = "请用中文写一首关于雨的短诗。", "Reply with three emoji: 🎉🚀🌧️"
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(scope="module")
def lm_of(bundles):
    """family -> LanguageModel on the CPU provider, loaded once per module."""
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load(bundles(family)[0], provider="cpu")
        return cache[family]

    return get


@pytest.fixture(scope="module")
def hf_of(checkpoints):
    """family -> (transformers tokenizer, model in eval mode), loaded once per module."""
    cache = {}

    def get(family: str):
        if family not in cache:
            folder = checkpoints(family)
            cache[family] = (transformers.AutoTokenizer.from_pretrained(folder),
                             transformers.AutoModelForCausalLM.from_pretrained(folder).eval())
        return cache[family]

    return get


def hf_generate(model, ids: list[int], eos: int, max_new_tokens: int, **options) -> list[int]:
    """transformers' greedy generate on IDS (a batch of one): the new ids, an ending eos included."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos, **options)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=config)
    return out[0, len(ids):].tolist()


def eos_of(lm) -> int:
    return lm.manifest.special_tokens.eos[0]


def run_steps(gen: Generator) -> list[int]:
    """Step GEN until it is done; the ids get_next_tokens gave for row 0."""
    tokens = []
    while not gen.is_done():
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
    return tokens


def token_ends(tokenizer, ids: list[int], text: str) -> list[int]:
    """Character offsets in TEXT where a token of IDS ends (where a prefix decodes to a prefix of TEXT)."""
    ends = []
    for k in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:k], skip_special_tokens=True)
        if text.startswith(prefix) and prefix and "\ufffd" not in prefix[-1:]:
            ends.append(len(prefix))
    return ends


def spanning_stop_string(tokenizer, ids: list[int], text: str) -> str:
    """A short printable string whose first occurrence in TEXT starts after 0 and straddles a token end."""
    ends = token_ends(tokenizer, ids, text)
    for end in ends:
        for s in (text[end - 2:end + 2], text[end - 1:end + 2], text[end - 2:end + 1], text[end - 1:end + 1]):
            if len(s) < 2 or "\ufffd" in s or not s.isprintable() or s.isspace():
                continue
            at = text.index(s)
            if at > 0 and any(at < e < at + len(s) for e in ends):
                return s
    raise AssertionError(f"no stop string spanning a token boundary in {text!r}")


def mid_token_stop_string(tokenizer, ids: list[int], text: str) -> str:
    """A two-character string that first occurs inside one token's text, after some text of that token."""
    ends = token_ends(tokenizer, ids, text)
    for start, end in zip([0] + ends, ends):
        for i in range(start + 1, end - 1):
            s = text[i:i + 2]
            if "\ufffd" not in s and s.isprintable() and not s.isspace() and text.index(s) == i:
                return s
    raise AssertionError(f"no token of {text!r} holds a stop string after other text")


def prompt_of_about(lm, tokens: int) -> str:
    """Plain text whose encoding has `tokens` ids or just under."""
    words = " ".join(["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."] * 40).split()
    text = words[0]
    for word in words[1:]:
        longer = f"{text} {word}"
        if len(lm.encode(longer)) > tokens:
            break
        text = longer
    return text


# -- greedy parity ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_64_tokens_equal_transformers_generate(lm_of, hf_of, family):
    lm = lm_of(family)
    hf_tokenizer, model = hf_of(family)
    for prompt in PROMPTS:
        ids = lm.encode(prompt)
        assert ids == hf_tokenizer(prompt)["input_ids"]  # the bundle's tokenizer gives transformers' ids
        assert len(ids) + 64 <= lm.manifest.max_context
        ref = hf_generate(model, ids, eos_of(lm), 64)
        got = lm.complete([prompt], max_new_tokens=64)[0]
        assert got.token_ids == ref
        assert got.text == hf_tokenizer.decode(ref, skip_special_tokens=True)
        assert got.prompt_tokens == len(ids)
        assert got.finish_reason == ("eos" if ref[-1] == eos_of(lm) else "length")
        assert lm.generate(prompt, max_new_tokens=64) == got.text


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_with_repetition_penalty_equals_transformers(lm_of, hf_of, family):
    lm = lm_of(family)
    _, model = hf_of(family)
    ids = lm.encode(PROMPTS[0])
    plain = lm.complete([PROMPTS[0]], max_new_tokens=32)[0].token_ids
    penalised = lm.complete([PROMPTS[0]], max_new_tokens=32, repetition_penalty=1.3)[0].token_ids
    assert penalised == hf_generate(model, ids, eos_of(lm), 32, repetition_penalty=1.3)
    assert penalised != plain  # the penalty changed something, so the comparison means something


# -- batches ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_a_left_padded_batch_equals_running_each_prompt_alone(lm_of, hf_of, family):
    lm = lm_of(family)
    _, model = hf_of(family)
    assert len({len(lm.encode(p)) for p in BATCH}) == len(BATCH)  # really different lengths: padding is involved
    batch = lm.complete(BATCH, max_new_tokens=24)
    assert len(batch) == len(BATCH)
    for prompt, row in zip(BATCH, batch):
        alone = lm.complete([prompt], max_new_tokens=24)[0]
        assert row.token_ids == alone.token_ids
        assert row.text == alone.text
        assert (row.finish_reason, row.prompt_tokens) == (alone.finish_reason, alone.prompt_tokens)
        assert row.token_ids == hf_generate(model, lm.encode(prompt), eos_of(lm), 24)
    assert lm.generate(BATCH, max_new_tokens=24) == [row.text for row in batch]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stop_string_ends_only_the_row_it_appears_in(lm_of, family):
    lm = lm_of(family)
    alone = [lm.complete([p], max_new_tokens=24)[0] for p in BATCH]
    chosen = None
    for row, completion in enumerate(alone):  # a string of one row's text that no other row's text holds
        others = [c.text for i, c in enumerate(alone) if i != row]
        for start in range(2, len(completion.text) - 3):
            s = completion.text[start:start + 3]
            if "\ufffd" not in s and s.isprintable() and not any(s in t for t in others):
                chosen = row, s
                break
        if chosen:
            break
    assert chosen, [c.text for c in alone]
    row, s = chosen
    batch = lm.complete(BATCH, max_new_tokens=24, stop=[s])
    cut = alone[row].text.index(s)
    assert batch[row].finish_reason == "stop"
    assert batch[row].text == alone[row].text[:cut]
    assert alone[row].token_ids[:len(batch[row].token_ids)] == batch[row].token_ids
    for i, (got, want) in enumerate(zip(batch, alone)):
        if i != row:  # the other rows ran on to their own end
            assert (got.token_ids, got.text, got.finish_reason) == (want.token_ids, want.text, want.finish_reason)
            assert got.finish_reason in ("eos", "length")


# -- sampling -----------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_text_and_other_seeds_other_texts(lm_of):
    lm = lm_of("llama")
    sample = dict(max_new_tokens=40, temperature=1.0)
    first = lm.generate(PROMPTS[0], seed=1, **sample)
    assert lm.generate(PROMPTS[0], seed=1, **sample) == first
    texts = {lm.generate(PROMPTS[0], seed=seed, **sample) for seed in (1, 2, 3, 4)}
    assert len(texts) == 4
    assert first != lm.generate(PROMPTS[0], max_new_tokens=40)  # it really samples


def test_top_k_1_temperature_0_and_a_tiny_top_p_all_equal_greedy(lm_of):
    lm = lm_of("llama")
    greedy = lm.complete([PROMPTS[1]], max_new_tokens=40)[0]
    for options in (dict(temperature=0.8, top_k=1, seed=5), dict(temperature=0, seed=5),
                    dict(temperature=1.0, top_k=0, top_p=1e-6, seed=5)):
        got = lm.complete([PROMPTS[1]], max_new_tokens=40, **options)[0]
        assert (got.token_ids, got.text) == (greedy.token_ids, greedy.text), options


def test_a_seeded_batch_is_reproducible(lm_of):
    lm = lm_of("gpt2")
    first = lm.generate(BATCH, max_new_tokens=16, temperature=0.9, seed=11)
    assert lm.generate(BATCH, max_new_tokens=16, temperature=0.9, seed=11) == first
    assert len(set(first)) == len(BATCH)


@pytest.mark.parametrize("options", [dict(temperature=0.9, seed=11), dict(temperature=1.2, top_p=0.9, repetition_penalty=1.3, seed=4)],
                         ids=["temperature", "top-p-penalty"])
def test_a_seeded_row_gets_in_a_batch_what_it_gets_alone(lm_of, options):
    """Each row draws from its own sampler: its text depends on its prompt, options and seed, not on its batch."""
    lm = lm_of("gpt2")
    together = lm.generate(BATCH, max_new_tokens=16, **options)
    assert together == [lm.generate(prompt, max_new_tokens=16, **options) for prompt in BATCH]
    assert lm.generate(BATCH[::-1], max_new_tokens=16, **options) == together[::-1]
    step_wise = lm.generator(max_new_tokens=16, **options)  # the fixed batch of append_tokens too
    step_wise.append_tokens([lm.encode(p) for p in BATCH])
    while not step_wise.is_done():
        step_wise.generate_next_token()
    assert [lm.tokenizer.decode(step_wise.get_new_tokens(i)) for i in range(len(BATCH))] == together


@pytest.mark.parametrize("family", FAMILIES)
def test_logprobs_are_transformers_log_softmax_on_the_same_sequence(lm_of, hf_of, family):
    """Each generated token's log probability and the top alternatives, from the model's own distribution (sampled
    at a temperature, which must not change them), against transformers' logits on the whole sequence."""
    lm, (_, model) = lm_of(family), hf_of(family)
    prompt = lm.encode(PROMPTS[0])
    done = lm.complete([PROMPTS[0]], max_new_tokens=12, temperature=1.5, seed=3, logprobs=4)[0]
    assert len(done.logprobs) == len(done.token_ids)
    sequence = prompt + done.token_ids
    with torch.no_grad():
        logits = model(torch.tensor([sequence])).logits[0].double()
    reference = torch.log_softmax(logits, -1)[len(prompt) - 1:len(sequence) - 1]  # (new, vocab): what chose each token
    for step, (token, entry) in enumerate(zip(done.token_ids, done.logprobs)):
        assert entry.token == token
        assert entry.logprob == pytest.approx(float(reference[step, token]), abs=1e-4)
        best = torch.topk(reference[step], 4).values.tolist()
        assert [v for _, v in entry.top] == pytest.approx(best, abs=1e-4)
        assert all(float(reference[step, t]) == pytest.approx(v, abs=1e-4) for t, v in entry.top)
    assert lm.complete([PROMPTS[0]], max_new_tokens=4)[0].logprobs is None
    with pytest.raises(GenerationError, match="logprobs must be"):
        lm.complete([PROMPTS[0]], logprobs=21)


# -- streaming and stop strings -----------------------------------------------------------------
@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat"])
@pytest.mark.parametrize("prompt", [CHINESE, EMOJI], ids=["chinese", "emoji"])
def test_streamed_pieces_join_to_exactly_the_generated_text(lm_of, prompt, chat):
    lm = lm_of("llama")  # byte-level BPE: generated tokens are arbitrary bytes, characters split anywhere
    pieces = list(lm.stream(prompt, chat=chat, max_new_tokens=48))
    completion = lm.complete([prompt], chat=chat, max_new_tokens=48)[0]
    assert "".join(pieces) == completion.text == lm.generate(prompt, chat=chat, max_new_tokens=48)
    assert completion.text == lm.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
    assert all(pieces)  # no empty pieces are yielded


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stop_string_across_a_token_boundary_cuts_the_text_and_is_never_streamed(lm_of, family):
    lm = lm_of(family)
    prompt = BATCH[1]
    full = lm.complete([prompt], max_new_tokens=40)[0]
    s = spanning_stop_string(lm.tokenizer, full.token_ids, full.text)
    stopped = lm.complete([prompt], max_new_tokens=40, stop=[s])[0]
    assert stopped.text == full.text[:full.text.index(s)]
    assert stopped.finish_reason == "stop"
    pieces = list(lm.stream(prompt, max_new_tokens=40, stop=[s]))
    assert "".join(pieces) == stopped.text
    assert not any(s in piece for piece in pieces)
    either = lm.complete([prompt], max_new_tokens=40, stop=["never appears 123", s])[0]
    assert (either.text, either.finish_reason) == (stopped.text, "stop")
    unused = lm.complete([prompt], max_new_tokens=40, stop=["never appears 123"])[0]
    assert (unused.text, unused.token_ids, unused.finish_reason) == (full.text, full.token_ids, full.finish_reason)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stop_string_inside_a_token_still_streams_the_text_before_it(lm_of, family):
    """The piece that completes a stop string may carry text before it: generate keeps that text,
    and the stream must yield it too (joined pieces == generate's text)."""
    lm = lm_of(family)
    checked = 0
    for prompt in PROMPTS + BATCH[1:]:
        full = lm.complete([prompt], max_new_tokens=40)[0]
        try:
            s = mid_token_stop_string(lm.tokenizer, full.token_ids, full.text)
        except AssertionError:
            continue  # this output has no such token; the next prompt will
        stopped = lm.complete([prompt], max_new_tokens=40, stop=[s])[0]
        assert (stopped.text, stopped.finish_reason) == (full.text[:full.text.index(s)], "stop")
        assert "".join(lm.stream(prompt, max_new_tokens=40, stop=[s])) == stopped.text, (prompt, s)
        checked += 1
    assert checked >= 2


# -- finish reasons -----------------------------------------------------------------------------
def test_max_new_tokens_finishes_with_length(lm_of):
    lm = lm_of("llama")
    c = lm.complete([PROMPTS[0]], max_new_tokens=7)[0]
    assert c.finish_reason == "length" and len(c.token_ids) == 7
    assert eos_of(lm) not in c.token_ids


def test_an_eos_token_finishes_the_row_with_eos_and_is_kept_in_the_ids(lm_of):
    lm = lm_of("llama")
    ids = lm.encode(PROMPTS[0])
    greedy = lm.complete([PROMPTS[0]], max_new_tokens=12)[0].token_ids
    end = greedy[5]  # pretend the sixth greedy token is the end-of-sequence token
    gen = Generator(lm.graph, GeneratorParams(max_new_tokens=12), lm.manifest.max_context, eos=(end,))
    gen.append_tokens(ids)
    run_steps(gen)
    assert gen.finish_reason(0) == "eos"
    assert gen.get_new_tokens(0) == greedy[:greedy.index(end) + 1]


def test_a_row_reaching_max_context_finishes_with_context_and_matches_transformers(lm_of, hf_of):
    lm = lm_of("gpt2")
    _, model = hf_of("gpt2")
    prompt = prompt_of_about(lm, 120)
    c = lm.complete([prompt], max_new_tokens=50)[0]
    assert 110 <= c.prompt_tokens <= 120
    assert c.finish_reason == "context"
    assert len(c.token_ids) < 50
    assert c.token_ids == hf_generate(model, lm.encode(prompt), eos_of(lm), len(c.token_ids))


def test_prompt_plus_generated_tokens_never_exceed_max_context(lm_of):
    """max_context is 'the most tokens one sequence may hold' (docs/bundle-format.md): a row stopped
    for the context holds exactly that many, prompt plus generated."""
    lm = lm_of("gpt2")
    limit = lm.manifest.max_context
    c = lm.complete([prompt_of_about(lm, 120)], max_new_tokens=50)[0]
    assert c.finish_reason == "context"
    assert c.prompt_tokens + len(c.token_ids) == limit


def test_a_prompt_longer_than_max_context_is_refused_naming_truncate_prompt(lm_of):
    lm = lm_of("gpt2")
    long_prompt = prompt_of_about(lm, 400)
    assert len(lm.encode(long_prompt)) > lm.manifest.max_context
    with pytest.raises(GenerationError, match="truncate_prompt"):
        lm.generate(long_prompt, max_new_tokens=10)


def test_truncate_prompt_warns_and_generates_from_the_newest_tokens(lm_of, hf_of):
    lm = lm_of("gpt2")
    _, model = hf_of("gpt2")
    long_prompt = prompt_of_about(lm, 400)
    ids = lm.encode(long_prompt)
    with pytest.warns(UserWarning, match="truncated"):
        c = lm.complete([long_prompt], max_new_tokens=10, truncate_prompt=True)[0]
    keep = lm.manifest.max_context - 10
    assert c.prompt_tokens == keep
    assert (c.finish_reason, len(c.token_ids)) == ("length", 10)
    assert c.token_ids == hf_generate(model, ids[-keep:], eos_of(lm), 10)


def test_the_truncation_warning_points_at_the_callers_line(lm_of):
    """stacklevel should name the user's line (as the Encoder's truncation warning does), not a line
    inside edgelm: that is what the warning shows, and what Python's once-per-location filter keys on."""
    lm = lm_of("gpt2")
    long_prompt = prompt_of_about(lm, 400)
    for call in (lambda: lm.generate(long_prompt, max_new_tokens=4, truncate_prompt=True),
                 lambda: lm.complete([long_prompt], max_new_tokens=4, truncate_prompt=True),
                 lambda: list(lm.stream(long_prompt, max_new_tokens=4, truncate_prompt=True))):
        with pytest.warns(UserWarning, match="truncated") as record:
            call()
        assert [w.filename for w in record if issubclass(w.category, UserWarning)] == [__file__]


# -- the step-wise generator --------------------------------------------------------------------
def test_stepping_a_generator_gives_the_same_tokens_as_complete(lm_of):
    lm = lm_of("llama")
    ids = lm.encode(PROMPTS[0])
    want = lm.complete([PROMPTS[0]], max_new_tokens=10)[0].token_ids
    gen = lm.generator(max_new_tokens=10)
    gen.append_tokens(ids)
    assert not gen.is_done()
    assert run_steps(gen) == want
    assert gen.get_new_tokens(0) == want and gen.get_sequence(0) == ids + want
    assert gen.finish_reason(0) == "length"
    with pytest.raises(GenerationError, match="finished"):
        gen.generate_next_token()


def test_rewinding_and_continuing_reproduces_the_same_tokens(lm_of):
    lm = lm_of("llama")
    ids = lm.encode(PROMPTS[1])
    gen = lm.generator(max_new_tokens=10)
    gen.append_tokens(ids)
    first = run_steps(gen)
    gen.rewind_to(len(ids) + 4)
    assert gen.get_sequence(0) == ids + first[:4] and not gen.is_done()
    assert run_steps(gen) == first[4:]
    assert gen.get_sequence(0) == ids + first
    gen.rewind_to(len(ids))  # back to the bare prompt
    assert run_steps(gen) == first


def test_a_second_turn_continues_like_a_fresh_generator_fed_the_whole_sequence(lm_of):
    lm = lm_of("llama")
    ids = lm.encode(PROMPTS[0])
    gen = lm.generator(max_new_tokens=10)
    gen.append_tokens(ids)
    first = run_steps(gen)
    turn = lm.tokenizer.encode(" Rain falls softly", add_special_tokens=False).ids
    gen.append_tokens(turn)
    assert not gen.is_done()
    second = run_steps(gen)
    fresh = lm.generator(max_new_tokens=10)
    fresh.append_tokens(ids + first + turn)
    assert second == run_steps(fresh)
    assert gen.get_sequence(0) == ids + first + turn + second


def test_a_batched_second_turn_continues_each_row_like_a_fresh_generator(lm_of):
    """Rows of a batch that finish at different steps (one by eos, one by length), then get a next
    turn: each row must continue as if its own sequence were fed to a fresh generator."""
    lm = lm_of("llama")
    prompts = [lm.encode(PROMPTS[0]), lm.encode(BATCH[2])]
    alone = [lm.complete([p], max_new_tokens=10)[0].token_ids for p in (PROMPTS[0], BATCH[2])]
    end = next(t for t in alone[0][1:5] if t not in alone[1])  # ends row 0 early, never row 1

    def generator():
        return Generator(lm.graph, GeneratorParams(max_new_tokens=10), lm.manifest.max_context, eos=(end,))

    gen = generator()
    gen.append_tokens(prompts)
    run_steps(gen)
    assert [gen.finish_reason(0), gen.finish_reason(1)] == ["eos", "length"]
    assert len(gen.get_new_tokens(0)) < len(gen.get_new_tokens(1))
    sequences = [gen.get_sequence(0), gen.get_sequence(1)]
    turn = lm.tokenizer.encode(" Rain falls softly", add_special_tokens=False).ids
    gen.append_tokens([turn, turn])
    run_steps(gen)
    for row in (1, 0):
        fresh = generator()
        fresh.append_tokens(sequences[row] + turn)
        run_steps(fresh)
        assert gen.get_new_tokens(row) == fresh.get_new_tokens(0), f"row {row}"
        assert gen.get_sequence(row) == sequences[row] + turn + gen.get_new_tokens(row)


def alone(lm, ids: list[int], params: GeneratorParams) -> list[int]:
    """The tokens a fresh batch-of-one generator makes for IDS."""
    gen = Generator(lm.graph, params, lm.manifest.max_context, eos=lm.manifest.special_tokens.eos)
    gen.append_tokens(ids)
    return run_steps(gen)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_joining_and_leaving_an_open_batch_get_what_they_get_alone(lm_of, family):
    """Continuous batching: rows join between steps, leave when done, and a new row reuses a freed slot
    (not the highest one); each row's tokens, greedy or seeded, equal its run alone."""
    lm = lm_of(family)
    prompts = [lm.encode(p) for p in (*BATCH, PROMPTS[1])]
    params = [GeneratorParams(max_new_tokens=4), GeneratorParams(max_new_tokens=12),
              GeneratorParams(max_new_tokens=9, temperature=0.9, top_p=0.9, seed=3), GeneratorParams(max_new_tokens=6, seed=5)]
    want = [alone(lm, ids, p) for ids, p in zip(prompts, params)]
    gen = Generator.open(lm.graph, GeneratorParams(), lm.manifest.max_context, slots=3, eos=lm.manifest.special_tokens.eos)
    assert gen.is_done() and gen.running() == []
    rows = {gen.add_row(prompts[0], params[0]): 0, gen.add_row(prompts[1], params[1]): 1}
    assert sorted(rows) == [0, 1]
    got, joins, steps = {}, {2: 2, 3: 5}, 0  # prompt -> step it joins at
    while rows or joins:
        for k, at in list(joins.items()):
            if steps >= at and len(rows) < 3:
                rows[gen.add_row(prompts[k], params[k])] = k
                del joins[k]
        gen.generate_next_token()
        steps += 1
        for row, k in list(rows.items()):
            if gen.is_row_done(row):
                got[k] = gen.get_new_tokens(row)
                gen.release_row(row)
                del rows[row]
    assert [got[k] for k in range(4)] == want
    assert gen.finish_reason(0) == "free" and gen.is_done()


def test_an_abandoned_row_frees_its_slot_and_leaves_the_others_untouched(lm_of):
    lm = lm_of("llama")
    a, b = lm.encode(BATCH[1]), lm.encode(BATCH[2])
    params = GeneratorParams(max_new_tokens=10)
    gen = Generator.open(lm.graph, params, lm.manifest.max_context, slots=2)
    ra, rb = gen.add_row(a), gen.add_row(b)
    for _ in range(3):
        gen.generate_next_token()
    gen.release_row(ra)  # its client went away mid-way
    assert gen.running() == [rb]
    assert gen.add_row(b) == ra  # the freed slot is taken first
    while gen.running():
        gen.generate_next_token()
    want = alone(lm, b, params)
    assert gen.get_new_tokens(rb) == want and gen.get_new_tokens(ra) == want


def drain(gen: Generator, row: int) -> list[int]:
    """Step GEN until ROW is done; its new tokens."""
    while not gen.is_row_done(row):
        gen.generate_next_token()
    return gen.get_new_tokens(row)


# LongRoPE (phi3) re-runs a row whose reused prefix sits on the other side of its switch
@pytest.mark.parametrize("family", [*FAMILIES, *tiny.registered("phi3")])
def test_a_row_continuing_a_released_one_prefills_only_the_rest_and_gets_what_it_gets_alone(lm_of, family):
    """Prefix reuse: the next turn of a chat (the whole last sequence, then more) and a prompt sharing only a long
    beginning take the slot that holds it and prefill the rest; their tokens equal a cold start's."""
    lm = lm_of(family)
    eos = lm.manifest.special_tokens.eos
    params = GeneratorParams(max_new_tokens=8)
    gen = Generator.open(lm.graph, params, lm.manifest.max_context, slots=3, eos=eos)
    first = lm.encode(prompt_of_about(lm, MIN_REUSE + 6))
    other = gen.add_row(lm.encode(BATCH[1]))  # slot 0: a short unrelated row that stays
    row = gen.add_row(first)
    assert (other, row) == (0, 1)
    reply = drain(gen, row)
    assert reply == alone(lm, first, params)
    sequence = gen.get_sequence(row)
    gen.release_row(row)
    gen.release_row(other)  # slot 0, the lowest free one, holds a prefix this prompt does not start with
    turn = sequence + lm.encode(" Paris is the capital of France.")[1:]
    assert gen.add_row(turn) == row
    reused = gen.reused_tokens
    assert gen.prefix_hits == 1 and reused == len(sequence) - 1  # all but the last token chosen, which never ran
    assert drain(gen, row) == alone(lm, turn, params)
    gen.release_row(row)
    shared = first[:MIN_REUSE + 2] + lm.encode(" The end.")[1:]  # a different ending after a long shared start
    assert gen.add_row(shared) == row and gen.reused_tokens - reused >= MIN_REUSE + 2
    assert drain(gen, row) == alone(lm, shared, params)


@pytest.mark.parametrize("family", [*FAMILIES, *tiny.registered("phi3")])
def test_rows_starting_with_a_running_rows_prompt_copy_its_keys_and_get_what_they_get_alone(lm_of, family):
    """n choices of one prompt, and requests sharing a system prompt: the prefix a running row holds is copied into
    the new row's slot (not prefilled again), and every row's tokens, greedy or seeded, equal a cold start's."""
    lm = lm_of(family)
    eos = lm.manifest.special_tokens.eos
    greedy, seeded = GeneratorParams(max_new_tokens=8), GeneratorParams(max_new_tokens=8, temperature=0.9, seed=2)
    gen = Generator.open(lm.graph, greedy, lm.manifest.max_context, slots=4, eos=eos)
    prompt = lm.encode(prompt_of_about(lm, MIN_COPY + 20))
    first = gen.add_row(prompt)
    assert gen.reused_tokens == 0
    again = gen.add_row(prompt, seeded)  # another choice of the same prompt: all of it but the token that must run
    assert gen.reused_tokens == len(prompt) - 1
    gen.generate_next_token()
    longer = prompt + lm.encode(" Paris is the capital of France.")[1:]
    third = gen.add_row(longer)  # the first row's slot holds the whole prompt by now
    assert gen.reused_tokens - (len(prompt) - 1) == len(prompt) and gen.prefix_hits == 2
    unlike = prompt[:MIN_COPY - 2] + lm.encode(" The end.")[1:]
    short = gen.add_row(unlike)  # too little in common to copy
    assert gen.prefix_hits == 2
    rows = {first: (prompt, greedy), again: (prompt, seeded), third: (longer, greedy)}
    while gen.running():
        gen.generate_next_token()
    for row, (ids, params) in rows.items():
        assert gen.get_new_tokens(row) == alone(lm, ids, params), row
    assert gen.get_new_tokens(short) == alone(lm, unlike, greedy)


@pytest.mark.parametrize("family", [*FAMILIES, *tiny.registered("phi3")])
def test_a_prompt_arriving_while_rows_decode_prefills_in_chunks_between_their_steps(lm_of, family, monkeypatch):
    """Chunked prefill: the running rows get a token at every step while the new prompt runs 16 tokens per step;
    then the new row decodes too, and every row's tokens equal a cold start's."""
    import edgelm.runtime.chunk_sizer as chunk_sizer

    monkeypatch.setattr(chunk_sizer, "MIN_CHUNK", 16)
    monkeypatch.setattr(chunk_sizer, "MAX_CHUNK", 16)
    lm = lm_of(family)
    widths = []
    step = lm.graph.step
    monkeypatch.setattr(lm.graph, "step", lambda cache, ids, live: widths.append(len(ids)) or step(cache, ids, live))
    eos = lm.manifest.special_tokens.eos
    params = GeneratorParams(max_new_tokens=12)
    gen = Generator.open(lm.graph, params, lm.manifest.max_context, slots=3, eos=eos, interleave=True)
    first = lm.encode(BATCH[2])
    a = gen.add_row(first)
    assert not gen.is_prefilling(a)  # nothing was decoding: prefilled at once
    gen.generate_next_token()
    long = lm.encode(prompt_of_about(lm, 70))
    b = gen.add_row(long, GeneratorParams(max_new_tokens=8, temperature=0.9, seed=5))
    assert gen.is_prefilling(b) and not gen.is_row_done(b) and gen.finish_reason(b) is None
    steps = 0
    while gen.is_prefilling(b):
        before = len(gen.get_new_tokens(a))
        gen.generate_next_token()
        steps += 1
        assert len(gen.get_new_tokens(a)) == before + 1 or gen.is_row_done(a)  # a never waits a step
    assert steps == -(-len(long) // 16) - 1 or steps == -(-len(long) // 16)  # 16 tokens of the prompt per step
    assert set(widths) == {1}  # the slot prefilling past a's does not widen a's steps
    dropped = gen.add_row(lm.encode(PROMPTS[1]))
    assert gen.is_prefilling(dropped)
    gen.release_row(dropped)  # a client that leaves while its prompt prefills
    while gen.running():
        gen.generate_next_token()
    assert gen.get_new_tokens(a) == alone(lm, first, params)
    assert gen.get_new_tokens(b) == alone(lm, long, GeneratorParams(max_new_tokens=8, temperature=0.9, seed=5))


@pytest.mark.parametrize("family", [*FAMILIES, *tiny.registered("phi3")])
def test_a_prefix_whose_slot_was_taken_comes_back_from_the_pool(lm_of, family):
    """More conversations than slots: the prefix a slot held goes to the pool when another row takes the slot, and
    the conversation's next turn takes it back (prefilling only the rest), with a cold start's tokens."""
    lm = lm_of(family)
    eos = lm.manifest.special_tokens.eos
    params = GeneratorParams(max_new_tokens=6)
    gen = Generator.open(lm.graph, params, lm.manifest.max_context, slots=1, eos=eos, pool_bytes=2**30)
    chat = lm.encode(prompt_of_about(lm, MIN_REUSE + 8))
    row = gen.add_row(chat)
    drain(gen, row)
    sequence = gen.get_sequence(row)
    gen.release_row(row)
    other = gen.add_row(lm.encode(BATCH[2]))  # another conversation takes the only slot
    reused = gen.reused_tokens
    assert len(gen.pool) == 1 and reused <= 1  # a bos token in common at most
    drain(gen, other)
    gen.release_row(other)
    turn = sequence + lm.encode(" Paris is the capital of France.")[1:]
    row = gen.add_row(turn)
    assert gen.pool.hits == 1 and gen.reused_tokens - reused == len(sequence) - 1
    assert drain(gen, row) == alone(lm, turn, params)


def test_the_prefix_pool_keeps_the_most_recent_within_its_budget_and_the_longest_of_a_chain():
    from edgelm.runtime.prefix_pool import Prefix, PrefixPool

    def prefix(tokens):
        return Prefix(tuple(tokens), {"k": np.zeros((1, len(tokens), 4), dtype=np.float32)})  # 16 bytes a token

    pool = PrefixPool(max_bytes=16 * 25)
    pool.put(prefix(range(10)))
    pool.put(prefix(range(12)))  # the same conversation, one turn later: replaces the shorter one
    assert len(pool) == 1 and pool.bytes == 16 * 12
    pool.put(prefix(range(100, 110)))
    assert pool.best(list(range(12)) + [7], 100)[1] == 12  # used: now the most recent
    pool.put(prefix(range(200, 210)))  # over budget: the least recently used (100..109) goes
    assert pool.best(list(range(100, 110)), 100) == (None, 0) and len(pool) == 2
    assert pool.best(list(range(200, 205)) + [0], 100)[1] == 5
    pool.put(prefix(range(1000)))  # larger than the whole budget: not kept
    assert len(pool) == 2


def test_a_short_shared_start_takes_the_lowest_free_slot_and_a_released_full_context_row_is_reusable(lm_of):
    lm = lm_of("llama")
    params = GeneratorParams(max_new_tokens=200)
    gen = Generator.open(lm.graph, params, lm.manifest.max_context, slots=2)
    a, b = lm.encode(BATCH[2]), lm.encode(BATCH[1])
    ra, rb = gen.add_row(a), gen.add_row(b)
    gen.release_row(rb)
    gen.release_row(ra)
    assert gen.add_row(b + [5]) == ra  # b's slot holds all of b, but fewer than MIN_REUSE tokens: not worth a wider batch
    gen.release_row(ra)
    full = lm.encode(prompt_of_about(lm, lm.manifest.max_context - 4))
    row = gen.add_row(full)
    assert drain(gen, row) and gen.finish_reason(row) == "context"  # the whole context written
    gen.release_row(row)
    before = gen.reused_tokens
    assert gen.add_row(full) == row and gen.reused_tokens - before == len(full) - 1
    assert drain(gen, row) == alone(lm, full, params)


def test_a_conversation_prefills_only_each_new_turn_and_answers_like_generate(lm_of):
    check_conversation(lm_of("llama"))  # the runtime path is the same for every family; the llama sample has a template


def check_conversation(lm):
    system, first, second = "Be brief.", "Hi there", "And Paris?"  # tiny models hold 128 tokens
    conversation = lm.conversation(system, max_new_tokens=6)
    history = [{"role": "system", "content": system}, {"role": "user", "content": first}]
    assert conversation.send(first) == lm.generate(history, max_new_tokens=6)
    assert conversation.reused_tokens == 0
    history += [{"role": "assistant", "content": conversation.messages[-1]["content"]}, {"role": "user", "content": second}]
    pieces = conversation.stream(second, stop=["zzz"])
    assert "".join(pieces) == lm.generate(history, max_new_tokens=6, stop=["zzz"])
    assert conversation.messages[:-1] == history
    assert conversation.reused_tokens >= len(lm.encode(history[:2]))  # the first turn's prompt was not prefilled again
    closed = conversation.stream("Ok")
    next(closed)
    closed.close()  # a reply abandoned half-way leaves the history as it was and frees the slot
    assert conversation.messages[:-1] == history
    conversation.reset()
    assert conversation.messages == history[:1]
    assert conversation.send(second) == lm.generate([history[0], history[-1]], max_new_tokens=6)
    with pytest.raises(GenerationError, match="unknown generation option"):
        lm.conversation(temprature=0.5)


def test_open_batch_misuse_is_refused_clearly(lm_of):
    lm = lm_of("llama")
    gen = Generator.open(lm.graph, GeneratorParams(max_new_tokens=2), lm.manifest.max_context, slots=1)
    with pytest.raises(GenerationError, match="add_row"):
        gen.append_tokens([1, 2])
    gen.add_row([1, 5])
    with pytest.raises(GenerationError, match="release_row one first"):
        gen.add_row([1, 6])
    with pytest.raises(GenerationError, match="one row"):
        Generator.open(lm.graph, GeneratorParams(), lm.manifest.max_context, slots=2).add_row([[1], [2]])
    with pytest.raises(GenerationError, match="limit"):
        Generator.open(lm.graph, GeneratorParams(), lm.manifest.max_context, slots=1).add_row([1] * (lm.manifest.max_context + 1))
    with pytest.raises(GenerationError, match="open batch"):
        lm.generator().release_row(0)


def test_generator_misuse_is_refused_clearly(lm_of):
    lm = lm_of("llama")
    gen = lm.generator(max_new_tokens=4)
    with pytest.raises(GenerationError, match="append_tokens"):
        gen.generate_next_token()
    with pytest.raises(GenerationError, match="vocabulary size"):
        gen.append_tokens([1, 10_000_000])
    gen.append_tokens([[1, 5, 6], [1, 7]])
    with pytest.raises(GenerationError, match="batch of one"):
        gen.rewind_to(2)
    with pytest.raises(GenerationError, match="for a batch of 2"):
        gen.append_tokens([1, 2])


# -- the KV cache contract ----------------------------------------------------------------------
def graph_of(bundles, family: str) -> DecoderGraph:
    out, manifest = bundles(family)
    return DecoderGraph(ort.InferenceSession(str(out / manifest.graph_file), providers=["CPUExecutionProvider"]), manifest)


@pytest.mark.parametrize("family", tiny.decoder_cases())
def test_whole_prefill_equals_prefix_prefill_plus_step_by_step_decode(bundles, lm_of, family):
    graph = graph_of(bundles, family)
    ids = lm_of(family).encode(PROMPTS[1])
    whole_cache = graph.new_cache(slots=1)
    whole = graph.extend(whole_cache, 0, ids, keep=0)  # (n, vocab)
    cache = graph.new_cache(slots=1)
    parts = [graph.extend(cache, 0, ids[:5], keep=0)]  # prefill of a prefix
    for token in ids[5:]:
        parts.append(graph.step(cache, np.asarray([token]), np.ones(1, dtype=bool)))  # one decode step each
    stepped = np.concatenate(parts, axis=0)
    assert stepped.shape == whole.shape
    np.testing.assert_allclose(stepped, whole, atol=1e-4)
    kv, n = graph.layout, len(ids)
    assert cache.lengths.tolist() == [n] and len(cache.buffers) == 2 * kv.num_layers
    for name, buffer in cache.buffers.items():  # the keys and values themselves agree, in one buffer per layer
        assert buffer.shape == (1, kv.num_kv_heads, cache.capacity, kv.head_size) and cache.capacity > n
        np.testing.assert_allclose(buffer[:, :, :n], whole_cache.buffers[name][:, :, :n], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_of_different_lengths_get_the_same_logits_as_alone(bundles, lm_of, family):
    graph = graph_of(bundles, family)
    lm = lm_of(family)
    short, long = lm.encode(BATCH[0]), lm.encode(BATCH[2])
    cache = graph.new_cache(slots=2)
    first = [graph.extend(cache, 0, short), graph.extend(cache, 1, long)]  # each row prefilled into its slot
    alone_short, alone_long = graph.new_cache(slots=1), graph.new_cache(slots=1)
    np.testing.assert_allclose(first[0], graph.extend(alone_short, 0, short), atol=1e-5)
    np.testing.assert_allclose(first[1], graph.extend(alone_long, 0, long), atol=1e-5)
    both = graph.step(cache, np.asarray([5, 6]), np.ones(2, dtype=bool))  # (2, vocab): one decode step for both rows
    np.testing.assert_allclose(both[0], graph.step(alone_short, np.asarray([5]), np.ones(1, dtype=bool))[0], atol=1e-4)
    np.testing.assert_allclose(both[1], graph.step(alone_long, np.asarray([6]), np.ones(1, dtype=bool))[0], atol=1e-4)
    assert cache.lengths.tolist() == [len(short) + 1, len(long) + 1]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_row_that_is_not_live_is_left_as_it_was(bundles, lm_of, family):
    """A finished row is fed filler tokens while the others decode; its next real step is unchanged."""
    graph = graph_of(bundles, family)
    ids = lm_of(family).encode(BATCH[1])
    cache, alone = graph.new_cache(slots=2), graph.new_cache(slots=1)
    graph.extend(cache, 0, ids), graph.extend(cache, 1, ids), graph.extend(alone, 0, ids)
    for filler in (9, 10, 11):  # row 1 sleeps for three steps
        graph.step(cache, np.asarray([7, filler]), np.asarray([True, False]))
    assert cache.lengths.tolist() == [len(ids) + 3, len(ids)]
    woken = graph.extend(cache, 1, [7])
    np.testing.assert_allclose(woken, graph.extend(alone, 0, [7]), atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prompt_run_in_chunks_gives_the_logits_of_one_pass(bundles, lm_of, family):
    graph = graph_of(bundles, family)
    ids = lm_of(family).encode(PROMPTS[1])  # about 20 tokens
    whole = graph.score(ids)  # (n, vocab), one pass
    graph.prefill_chunk = 6  # instance attribute: only this graph object chunks this small
    for keep in (0, 1, 4, 6, 7, len(ids)):
        cache = graph.new_cache(slots=1)
        chunked = graph.extend(cache, 0, ids, keep=keep)
        np.testing.assert_allclose(chunked, whole if keep == 0 else whole[-keep:], atol=1e-5)
        assert cache.lengths.tolist() == [len(ids)]


def test_capacity_grows_in_chunks_and_keeps_what_the_rows_hold(bundles):
    graph = graph_of(bundles, "llama")
    cache = graph.new_cache(slots=2, capacity=10)
    assert cache.capacity == CHUNK
    name = graph.layout.past_names()[0][0]
    cache.buffers[name][:, :, :CHUNK] = np.random.default_rng(0).random(cache.buffers[name][:, :, :CHUNK].shape)
    before = cache.buffers[name].copy()
    cache.lengths[:] = [CHUNK, 7]  # row 1's positions past 7 are scratch: not copied
    cache.reserve(CHUNK + 5)
    assert cache.capacity == 2 * CHUNK
    np.testing.assert_array_equal(cache.buffers[name][0, :, :CHUNK], before[0])
    np.testing.assert_array_equal(cache.buffers[name][1, :, :7], before[1, :, :7])
    assert not cache.buffers[name][1, :, 7:].any()


# -- chat template ------------------------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? 🇮🇹 请回答"},
]


def test_render_chat_and_encode_equal_transformers_apply_chat_template(lm_of, hf_of):
    lm = lm_of("llama")
    hf_tokenizer, _ = hf_of("llama")
    for messages in (CONVERSATION[:3], CONVERSATION):
        assert lm.render_chat(messages) == hf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                                          add_generation_prompt=True)
        assert lm.encode(messages) == hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                                          return_dict=False)
    user = [{"role": "user", "content": "hello"}]
    assert lm.encode("hello", chat=True) == lm.encode(user)
    assert lm.generate("hello", chat=True, max_new_tokens=8) == lm.generate(user, max_new_tokens=8)


def test_chat_without_a_template_or_with_bad_messages_is_refused(lm_of):
    with pytest.raises(GenerationError, match="no chat template"):
        lm_of("gpt2").render_chat([{"role": "user", "content": "hi"}])
    with pytest.raises(GenerationError, match="message 0"):
        lm_of("llama").generate([{"role": "robot", "content": "hi"}])


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt,fragment", [("", "empty"), ("   \n\t", "empty"), (123, "list of prompts"),
                                             (None, "list of prompts"), ([1, 2], "prompt 0 must be a str")])
def test_bad_prompts_are_refused_with_a_clear_message(lm_of, prompt, fragment):
    with pytest.raises(GenerationError, match=fragment):
        lm_of("llama").generate(prompt, max_new_tokens=4)


@pytest.mark.parametrize("options,fragment", [
    (dict(temperature=-0.5), "temperature must be a finite number >= 0"),
    (dict(top_p=0.0), r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be a number in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be a whole number >= 0"),
    (dict(max_new_tokens=0), "max_new_tokens must be a whole number >= 1"),
    (dict(foo=1), "unknown generation option.*foo"),
    (dict(stop=[""]), "stop must be a list of non-empty strings"),
])
def test_bad_generation_options_are_refused_with_a_clear_message(lm_of, options, fragment):
    lm = lm_of("llama")
    with pytest.raises(GenerationError, match=fragment):
        lm.generate("hello", **options)
    with pytest.raises(GenerationError, match=fragment):
        next(lm.stream("hello", **options))


def test_several_bad_options_are_reported_at_once(lm_of):
    with pytest.raises(GenerationError) as error:
        lm_of("llama").generate("hello", temperature=-1, top_p=2.0, top_k=-3)
    assert len(error.value.problems) == 3


def test_calls_of_the_other_kind_of_bundle_are_refused_naming_the_task(lm_of, bundles):
    with pytest.raises(GenerationError, match="embed needs a feature-extraction bundle.*text-generation"):
        lm_of("llama").embed(["hello"])
    encoder = load(bundles("bert/feature-extraction")[0], provider="cpu")
    with pytest.raises(GenerationError, match="generate needs a text-generation bundle.*feature-extraction"):
        encoder.generate("hello")


def test_loading_a_missing_folder_raises_bundle_error(tmp_path):
    with pytest.raises(BundleError):
        load(tmp_path / "nonexistent")
    with pytest.raises(BundleError):
        load("/nonexistent")


# -- providers and threads ----------------------------------------------------------------------
@pytest.mark.skipif(HAS_CUDA, reason="onnxruntime here offers CUDA")
def test_cuda_without_onnxruntime_gpu_names_the_package_to_install(bundles):
    with pytest.raises(BundleError, match="onnxruntime-gpu"):
        load(bundles("llama")[0], provider="cuda")


@pytest.mark.skipif(HAS_CUDA, reason="onnxruntime here offers CUDA")
def test_auto_provider_falls_back_to_cpu_without_cuda_quietly_and_says_why_when_asked(bundles):
    """CPU is the normal case on an edge box: no warning; bundle.provider_note (inspect, --verbose) says why."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        lm = load(bundles("llama")[0], provider="auto")
    assert lm.provider == "cpu"
    assert lm.bundle.provider_note == "cpu (auto: this onnxruntime has no CUDA provider)"
    assert lm.generate("hello", max_new_tokens=4)


def test_unknown_provider_and_bad_threads_are_refused_and_threads_2_works(bundles, lm_of):
    folder = bundles("llama")[0]
    with pytest.raises(BundleError, match="tpu"):
        load(folder, provider="tpu")
    with pytest.raises(BundleError, match="threads"):
        load(folder, provider="cpu", threads=-1)
    lm = load(folder, provider="cpu", threads=2)
    assert lm.provider == "cpu"
    assert lm.generate(PROMPTS[0], max_new_tokens=12) == lm_of("llama").generate(PROMPTS[0], max_new_tokens=12)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="CUDAExecutionProvider is not available (install onnxruntime-gpu on a GPU machine)")
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_provider_generates_like_cpu_and_keeps_the_cache_on_the_gpu(bundles, lm_of, family):
    cpu = lm_of(family)
    gpu = load(bundles(family)[0], provider="cuda")
    assert gpu.provider == "cuda"
    for prompt in PROMPTS:
        assert gpu.complete([prompt], max_new_tokens=32)[0].token_ids == cpu.complete([prompt], max_new_tokens=32)[0].token_ids
    assert [c.token_ids for c in gpu.complete(BATCH, max_new_tokens=16)] == \
           [c.token_ids for c in cpu.complete(BATCH, max_new_tokens=16)]
    gen = gpu.generator(max_new_tokens=4)
    gen.append_tokens(gpu.encode(PROMPTS[0]))
    gen.generate_next_token()
    assert gen._cache.buffers
    for value in gen._cache.buffers.values():
        assert value.device_name().lower() == "cuda"


@pytest.mark.parametrize("pieces,stop,text", [
    (["a", "b", "c", "STO", "P", "x"], "bcSTOP", "a"),          # "b", "c" are held back until the stop is whole
    (["Hello", " wor", "ld", "!"], "o w", "Hell"),              # a stop spread over two pieces
    (["xy", "z"], "xyz", ""),                                   # a stop longer than all text so far
    (["ab", "ab", "ac"], "aba", ""),                            # the first occurrence wins: "abab" holds it at 0
    (["one two", " three"], "four", "one two three"),           # no stop: everything, in order
])
def test_stop_strings_are_found_across_pieces_and_never_shown(pieces, stop, text):
    from edgelm.runtime.text_row import TextRow

    row, shown, stopped = TextRow(Tokenizer(models.BPE()), (stop,)), [], False
    for piece in pieces:
        out, stopped = row._extend(piece)
        shown.append(out)
        if stopped:
            break
    if not stopped:
        shown.append(row.held)
    assert "".join(shown) == text and stop not in "".join(shown)
