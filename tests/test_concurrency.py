"""One loaded bundle shared by threads, and generators interleaved in one thread, on tiny bundles.

The reference for every check is the same calls run one after another first: eight threads
generating (greedy and seeded sampling), streaming and embedding at once must give exactly those
results, round after round; several Generators (and streams) stepped in turn in one thread must
each give exactly what it gives alone. Nothing here is approximate: a step of one caller that
leaked into another's cache, sampler or detokenizer would change tokens.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgelm.runtime import load
from edgelm.runtime.generator import Generator, GeneratorParams
from tests import tiny

THREADS = 8
ROUNDS = 3
PROMPTS = ["The quick brown fox", "Paris is", "Rain falls softly on the roof; the kiosk hums along.",
           "请用中文 🎉", "Once upon a time", "edgelm ships", "What is the capital of France?", "a"]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris",
         "Rain falls softly on the roof; the kiosk hums along.",
         "What is the capital of France? The capital of France is Paris.", "edgelm", "a b c d e f g h"]


@pytest.fixture(scope="module", params=tiny.decoder_samples())
def lm(request, bundles):
    return load(bundles(request.param)[0], provider="cpu")


@pytest.fixture(scope="module")
def encoder(bundles):
    return load(bundles("bert/feature-extraction")[0], provider="cpu")


def decoder_calls(lm) -> list:
    """Calls of every kind, each returning what must not change: greedy, seeded sampling, streams, a batch."""
    calls = []
    for i, prompt in enumerate(PROMPTS):
        sampled = {"temperature": 0.9, "top_p": 0.9, "seed": i}
        calls += [
            lambda p=prompt, n=6 + i: _completion(lm.complete([p], max_new_tokens=n)[0]),
            lambda p=prompt, o=sampled: _completion(lm.complete([p], max_new_tokens=10, **o)[0]),
            lambda p=prompt, o=sampled: "".join(lm.stream(p, max_new_tokens=10, repetition_penalty=1.2, **o)),
        ]
    calls.append(lambda: [_completion(c) for c in lm.complete(PROMPTS[:3], max_new_tokens=8, temperature=0.7, seed=3)])
    return calls


def _completion(c) -> tuple:
    return c.token_ids, c.text, c.finish_reason


def run_in_threads(calls: list, order_seed: int) -> tuple[list, set[int]]:
    """Run CALLS on THREADS threads in a shuffled order, the first THREADS of them released together.

    Returns the results in CALLS' order and the ids of the threads that ran them.
    """
    order = list(range(len(calls)))
    random.Random(order_seed).shuffle(order)
    start = threading.Barrier(THREADS, timeout=60)
    results, workers = [None] * len(calls), set()

    def run(position: int, index: int) -> None:
        if position < THREADS:
            start.wait()  # these THREADS calls really overlap
        workers.add(threading.get_ident())
        results[index] = calls[index]()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(run, position, index) for position, index in enumerate(order)]
        for future in futures:
            future.result()  # re-raises whatever a thread raised
    return results, workers


def test_threads_sharing_one_model_give_the_sequential_results(lm):
    calls = decoder_calls(lm)
    sequential = [call() for call in calls]
    assert len({repr(r) for r in sequential}) > len(calls) // 2  # the calls really differ from each other
    for round_ in range(ROUNDS):
        threaded, workers = run_in_threads(calls, order_seed=round_)
        assert len(workers) == THREADS
        for i, (got, want) in enumerate(zip(threaded, sequential)):
            assert got == want, f"round {round_}, call {i}"


def test_threads_embedding_on_one_encoder_give_the_sequential_vectors(encoder):
    calls = [lambda: encoder.embed(TEXTS), lambda: encoder.embed(TEXTS[::-1], batch_size=2)]
    calls += [lambda t=text: encoder.embed(t) for text in TEXTS]
    sequential = [call() for call in calls]
    np.testing.assert_array_equal(sequential[1], sequential[0][::-1])  # the batch shape changed nothing either
    for round_ in range(ROUNDS):
        threaded, workers = run_in_threads(calls * 2, order_seed=round_)
        assert len(workers) == THREADS
        for i, (got, want) in enumerate(zip(threaded, sequential * 2)):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=f"round {round_}, call {i}")


def test_a_decoder_and_an_encoder_in_threads_at_once_give_the_sequential_results(lm, encoder):
    calls = decoder_calls(lm)[:6] + [lambda t=text: encoder.embed(t) for text in TEXTS[:4]]
    sequential = [call() for call in calls]
    threaded, _ = run_in_threads(calls, order_seed=7)
    for got, want in zip(threaded, sequential):
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want


# -- interleaved in one thread ------------------------------------------------------------------
def new_generator(lm, params: GeneratorParams) -> Generator:
    special = lm.manifest.special_tokens
    return Generator(lm.graph, params, lm.manifest.max_context, eos=special.eos, pad=special.pad)


def test_generators_stepped_in_turn_each_give_their_solo_tokens(lm):
    jobs = [  # (prompt rows, options): greedy and sampled, one row and two, different lengths
        ([lm.encode(PROMPTS[0])], GeneratorParams(max_new_tokens=12)),
        ([lm.encode(PROMPTS[1])], GeneratorParams(max_new_tokens=20, temperature=0.9, seed=1)),
        ([lm.encode(PROMPTS[2]), lm.encode(PROMPTS[3])], GeneratorParams(max_new_tokens=9)),
        ([lm.encode(PROMPTS[4])], GeneratorParams(max_new_tokens=16, temperature=1.1, top_k=20, seed=2,
                                                  repetition_penalty=1.3)),
        ([lm.encode(PROMPTS[1])], GeneratorParams(max_new_tokens=20, temperature=0.9, seed=1)),  # a twin of job 1
    ]

    def solo(rows, params):
        gen = new_generator(lm, params)
        gen.append_tokens(rows)
        while not gen.is_done():
            gen.generate_next_token()
        return [gen.get_new_tokens(i) for i in range(len(rows))]

    alone = [solo(rows, params) for rows, params in jobs]
    gens = [new_generator(lm, params) for _, params in jobs]
    for gen, (rows, _) in zip(gens, jobs):
        gen.append_tokens(rows)
    steps = 0
    while not all(gen.is_done() for gen in gens):
        for gen in gens:  # step A, step B, step C, ..., step A, ...
            if not gen.is_done():
                gen.generate_next_token()
                steps += 1
    assert steps > len(gens) * 5  # they really ran interleaved for a while
    assert [[gen.get_new_tokens(i) for i in range(gen.batch)] for gen in gens] == alone
    assert alone[1] == alone[4]  # the same seed gives the same tokens, interleaved or not
    assert alone[1] != solo(jobs[1][0], GeneratorParams(max_new_tokens=20, temperature=0.9, seed=2))  # it does sample


def test_streams_advanced_in_turn_each_join_to_their_solo_text(lm):
    options = [{"max_new_tokens": 16}, {"max_new_tokens": 16, "temperature": 0.8, "seed": 4},
               {"max_new_tokens": 10, "stop": ["e"]}]
    jobs = [(prompt, option) for prompt, option in zip(PROMPTS, options * 3)]
    alone = [lm.generate(prompt, **option) for prompt, option in jobs]
    streams = [lm.stream(prompt, **option) for prompt, option in jobs]
    pieces = [[] for _ in jobs]
    live = set(range(len(jobs)))
    while live:
        for i in sorted(live):
            try:
                pieces[i].append(next(streams[i]))
            except StopIteration:
                live.discard(i)
    assert ["".join(p) for p in pieces] == alone
