"""Properties of the decoder runtime on tiny gpt2 and llama bundles, checked by hypothesis.

The contract under test: any input either runs or raises GenerationError (the documented
error), never another exception and never a hang; and the ways of asking for the same greedy
text agree with each other: stream vs generate vs Completion, stop strings vs the uncut text, a
batch vs each prompt alone, an open batch's rows vs each prompt alone, step-wise calls in any
order vs a shadow of what they must have done.
"""

from __future__ import annotations

import math
import signal
from contextlib import contextmanager
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from edgelm.errors import GenerationError
from edgelm.runtime import load
from edgelm.runtime.generator import CONTEXT, EOS, FREE, LENGTH, STOP, Generator, GeneratorParams
from tests import tiny

FAMILIES = tiny.decoder_samples()
PROMPT = "The quick brown fox"
FIXED_PROMPTS = ["The quick brown fox", "Paris is", "Rain falls softly on the roof;", "请用中文 🎉"]
EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MACHINE = settings(EXAMPLES, max_examples=60, stateful_step_count=30)
HANG_SECONDS = 30  # a tiny model's longest call here takes well under a second

# -- strategies ---------------------------------------------------------------------------------
def mixed(*strategies):
    """One of STRATEGIES, each as likely (st.one_of flattens nested one_ofs and weighs every branch alike)."""
    return st.integers(0, len(strategies) - 1).flatmap(lambda i: strategies[i])


FRAGMENTS = ["\x00", "\x1b[0m", "\r\n", "\t", "\u200b", "\u200d", "\ufeff", "\ufffd", "e\u0301", "中文字",
             "東京", "🎉", "🌧️", "👩‍👩‍👧‍👦", "\U0010ffff", "<|endoftext|>", "</s>", "<s>", " the", "Paris"]
TEXT = st.one_of(st.text(max_size=30),  # any code point but lone surrogates: NUL, controls, CJK, emoji...
                 st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=8).map("".join))
SURROGATE = st.characters(categories=["Cs"])  # '\ud800'..'\udfff': a str may hold them, UTF-8 cannot
ANY_TEXT = st.one_of(TEXT, st.tuples(TEXT, SURROGATE, TEXT).map("".join))

JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2),
                 st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                 st.integers(-2**70, 2**70), st.sampled_from([math.nan, math.inf, -math.inf, -0.0]))
OPTIONS = st.fixed_dictionaries({}, optional={
    "temperature": mixed(st.floats(0, 2), st.sampled_from([5e-324, 1e-310, 1e300, 1.7e308]), JUNK),
    "top_k": mixed(st.integers(0, 500), st.integers(10**18, 10**30), JUNK),
    "top_p": mixed(st.floats(0, 1), st.sampled_from([5e-324, 1e-300]), JUNK),
    "repetition_penalty": mixed(st.floats(0.5, 2), st.sampled_from([1e-300, 1e300]), JUNK),
    "seed": mixed(st.integers(0, 2**64), st.integers(2**64, 2**200), JUNK),
    "max_new_tokens": mixed(st.integers(1, 12), st.just(2**70), JUNK),
})
# Ids no bundle's vocabulary holds, shapes that are not a row or a list of rows, types that are not ids.
BAD_TOKENS = st.one_of(
    st.sampled_from([[], [[]], [[1], []], [-1], [1, -5], [10**6], [2**70], [1.0], [1.5], ["a"], "abc", None, True, 3,
                     [True], [[1, [2]]], [None], [[1], "x"], [math.nan]]),
    st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
)


def is_count(x) -> bool:
    """A whole number that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_finite(x) -> bool:
    """A real number, not a bool, not NaN or infinite."""
    return is_count(x) or (isinstance(x, float) and math.isfinite(x))


# What each sampling option accepts (None = the bundle's default); anything else is a GenerationError.
ACCEPTS = {
    "max_new_tokens": lambda v: is_count(v) and v >= 1,
    "temperature": lambda v: is_finite(v) and v >= 0,
    "top_k": lambda v: is_count(v) and v >= 0,
    "top_p": lambda v: is_finite(v) and 0 < v <= 1,
    "repetition_penalty": lambda v: is_finite(v) and v > 0,
    "seed": lambda v: is_count(v) and v >= 0,
}


# -- helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=FAMILIES)
def lm(request, bundles):
    """A LanguageModel on the CPU provider, loaded once per module and family."""
    return load(bundles(request.param)[0], provider="cpu")


@contextmanager
def finishes_within(seconds: float = HANG_SECONDS):
    """Fail with TimeoutError instead of hanging (SIGALRM: pytest runs tests in the main thread)."""
    def expire(signum, frame):
        raise TimeoutError(f"a call ran for over {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def stream_all(lm, prompt, **options):
    """(pieces, Completion) of one streamed run."""
    pieces, stream = [], lm.stream(prompt, **options)
    while True:
        try:
            pieces.append(next(stream))
        except StopIteration as end:
            return pieces, end.value


def solo_tokens(lm, ids: list[int], params: GeneratorParams, cache: dict) -> list[int]:
    """The ids a fresh Generator on PARAMS generates after IDS alone (memoised in CACHE)."""
    key = (tuple(ids), params)
    if key not in cache:
        special = lm.manifest.special_tokens
        gen = Generator(lm.graph, params, lm.manifest.max_context, eos=special.eos, pad=special.pad)
        gen.append_tokens(ids)
        while not gen.is_done():
            gen.generate_next_token()
        cache[key] = gen.get_new_tokens(0)
    return cache[key]


# -- prompts ------------------------------------------------------------------------------------
@EXAMPLES
@given(prompt=ANY_TEXT)
def test_any_prompt_gives_text_or_a_generation_error(lm, prompt):
    """Refused exactly when blank, not encodable as UTF-8 (a lone surrogate) or too long; else text."""
    encodable = not any("\ud800" <= c <= "\udfff" for c in prompt)
    too_long = encodable and len(lm.tokenizer.encode(prompt, add_special_tokens=True).ids) >= lm.manifest.max_context
    with finishes_within():
        if not prompt.strip() or not encodable or too_long:
            with pytest.raises(GenerationError):
                lm.generate(prompt, max_new_tokens=6)
            with pytest.raises(GenerationError):
                next(lm.stream(prompt, max_new_tokens=6))
        else:
            text = lm.generate(prompt, max_new_tokens=6)
            assert isinstance(text, str)
            assert "".join(lm.stream(prompt, max_new_tokens=6)) == text


@EXAMPLES
@given(prompt=TEXT.filter(str.strip), max_new_tokens=st.integers(1, 24))
def test_streamed_pieces_join_to_the_generated_text_and_the_completion(lm, prompt, max_new_tokens):
    if len(lm.encode(prompt)) >= lm.manifest.max_context:
        return  # refused, as the test above checks
    with finishes_within():
        text = lm.generate(prompt, max_new_tokens=max_new_tokens)
        pieces, completion = stream_all(lm, prompt, max_new_tokens=max_new_tokens)
    assert "".join(pieces) == completion.text == text
    assert all(pieces)  # no empty pieces
    assert text == lm.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
    assert 1 <= len(completion.token_ids) <= max_new_tokens


# -- sampling options ---------------------------------------------------------------------------
@EXAMPLES
@given(options=OPTIONS)
def test_sampling_options_run_or_are_refused_listing_every_bad_one(lm, options):
    bad = [name for name, value in options.items() if value is not None and not ACCEPTS[name](value)]
    with finishes_within():
        if bad:
            with pytest.raises(GenerationError) as refused:
                lm.complete([PROMPT], **options)
            assert len(refused.value.problems) == len(bad), (bad, refused.value.problems)
            assert all(any(name in problem for problem in refused.value.problems) for name in bad)
            with pytest.raises(GenerationError):
                next(lm.stream(PROMPT, **options))
            with pytest.raises(GenerationError):
                lm.generator(**options)
            return
        first = lm.complete([PROMPT], **options)[0]
        limit = options.get("max_new_tokens") or 256
        assert 1 <= len(first.token_ids) <= limit
        assert first.finish_reason in (EOS, LENGTH, CONTEXT)
        assert all(0 <= t < lm.graph.vocab_size for t in first.token_ids)
        if not options.get("temperature") or options.get("seed") is not None:  # greedy or seeded: reproducible
            again = lm.complete([PROMPT], **options)[0]
            assert (again.token_ids, again.text) == (first.token_ids, first.text)
            assert "".join(lm.stream(PROMPT, **options)) == first.text


@EXAMPLES
@given(temperature=st.one_of(st.floats(min_value=0, exclude_min=True, allow_infinity=False),
                             st.sampled_from([5e-324, 1e-310, 1e-300, 1e300, 1.7e308])),
       seed=st.integers(0, 2**32), narrowing=st.sampled_from(["top_k", "top_p", "temperature"]))
def test_top_k_1_a_tiny_top_p_or_a_tiny_temperature_sample_the_greedy_tokens(lm, temperature, seed, narrowing):
    """Each of these leaves one candidate per step (the argmax), at any temperature and seed."""
    greedy = lm.complete([PROMPT], max_new_tokens=12)[0].token_ids
    options = {"top_k": {"top_k": 1}, "top_p": {"top_p": 5e-324, "top_k": 0}, "temperature": {"top_k": 0}}[narrowing]
    if narrowing == "temperature":
        temperature = min(temperature, 1e-200)
    sampled = lm.complete([PROMPT], max_new_tokens=12, temperature=temperature, seed=seed, **options)[0]
    assert sampled.token_ids == greedy, (temperature, options)


# -- stop strings -------------------------------------------------------------------------------
@EXAMPLES
@given(prompt=st.sampled_from(FIXED_PROMPTS), data=st.data())
def test_stop_strings_never_appear_and_cut_the_uncut_text_at_the_first_one(lm, prompt, data):
    full = lm.complete([prompt], max_new_tokens=24)[0].text
    inside = st.integers(0, len(full) - 1).flatmap(lambda at: st.integers(1, 4).map(lambda n: full[at:at + n]))
    tail = st.integers(1, 4).map(lambda n: full[-n:])  # often completed only by the run's last token
    stops = mixed(st.text(min_size=1, max_size=4), inside, tail) if full else st.text(min_size=1, max_size=4)
    stop = data.draw(st.lists(stops, min_size=1, max_size=3), label="stop")
    with finishes_within():
        completion = lm.complete([prompt], max_new_tokens=24, stop=stop)[0]
        pieces, streamed = stream_all(lm, prompt, max_new_tokens=24, stop=stop)
    assert not any(s in completion.text for s in stop)
    assert "".join(pieces) == streamed.text == completion.text
    ends = [full.find(s) + len(s) for s in stop if s in full]  # where each stop string is first complete
    if ends:
        seen = full[:min(ends)]  # the text when the first stop string became complete: decoding stops there
        assert completion.text == full[:min(seen.find(s) for s in stop if s in seen)]  # cut before the earliest one
        assert completion.finish_reason == STOP
    else:
        assert completion.text == full


# -- batches ------------------------------------------------------------------------------------
@EXAMPLES
@given(prompts=st.lists(st.one_of(st.sampled_from(FIXED_PROMPTS), TEXT.filter(str.strip)), min_size=1, max_size=5))
def test_a_greedy_batch_equals_each_prompt_generated_alone(lm, prompts):
    if any(len(lm.encode(p)) >= lm.manifest.max_context for p in prompts):
        with pytest.raises(GenerationError):
            lm.generate(prompts, max_new_tokens=8)
        return
    with finishes_within():
        batch = lm.complete(prompts, max_new_tokens=8)
        alone = [lm.complete([p], max_new_tokens=8)[0] for p in prompts]
        texts = lm.generate(prompts, max_new_tokens=8)
    assert [_outcome(c) for c in batch] == [_outcome(c) for c in alone]
    assert texts == [c.text for c in alone]


def _outcome(completion) -> tuple:
    return completion.token_ids, completion.text, completion.finish_reason


# -- step-wise calls in any order ---------------------------------------------------------------
class GeneratorCalls(RuleBasedStateMachine):
    """append_tokens, generate_next_token, rewind_to, stop_row and the readers in any order, with good
    and bad arguments: bad calls raise GenerationError and change nothing; good ones do what a shadow
    copy of every row's ids says."""

    lm = None  # set by the test

    @initialize(max_new_tokens=mixed(st.integers(1, 4), st.integers(1, 12), st.just(200)), sampled=st.booleans(),
                seed=st.integers(0, 9))
    def start(self, max_new_tokens, sampled, seed):
        self.max_new_tokens = max_new_tokens
        self.gen = self.lm.generator(max_new_tokens=max_new_tokens, temperature=0.9 if sampled else 0.0, seed=seed)
        self.limit, self.vocab = self.lm.manifest.max_context, self.lm.graph.vocab_size
        self.eos = set(self.lm.manifest.special_tokens.eos)
        self.rows: list[list[int]] = []  # each row's ids as the calls so far must have left them

    def state(self):
        gen = self.gen
        return (gen.batch, gen.is_done(), [gen.get_sequence(i) for i in range(gen.batch)],
                [gen.finish_reason(i) for i in range(gen.batch)])

    def refused(self, call, *args):
        """CALL(*ARGS) raises GenerationError and leaves the generator as it was."""
        before = self.state()
        with pytest.raises(GenerationError):
            call(*args)
        assert self.state() == before

    @rule(data=st.data())
    def append_tokens(self, data):
        count = self.gen.batch or data.draw(mixed(st.just(1), st.integers(1, 3)), label="rows")
        held = self.rows or [[]] * count
        short = st.lists(st.integers(0, self.vocab - 1), min_size=1, max_size=8)
        up_to_the_limit = st.tuples(st.integers(0, self.vocab - 1), st.integers(-1, 2))  # (id, how far short of it)
        drawn = data.draw(st.lists(st.one_of(short, up_to_the_limit), min_size=count, max_size=count), label="new")
        new = [more if isinstance(more, list) else [more[0]] * max(self.limit - len(row) - more[1], 1)
               for row, more in zip(held, drawn)]
        tokens = new[0] if count == 1 and data.draw(st.booleans(), label="flat") else new  # one row may come flat
        longest = max(len(row) + len(more) for row, more in zip(held, new))
        if longest > self.limit:
            self.refused(self.gen.append_tokens, tokens)
            return
        try:
            self.gen.append_tokens(tokens)
        except GenerationError:
            assert longest == self.limit  # a sequence with no room left may be refused, nothing else
            return
        self.rows = [row + more for row, more in zip(held, new)]
        assert not self.gen.is_done()

    @rule(tokens=BAD_TOKENS)
    def append_bad_tokens(self, tokens):
        self.refused(self.gen.append_tokens, tokens)

    @rule()
    def append_the_wrong_number_of_rows(self):
        if self.gen.batch:
            self.refused(self.gen.append_tokens, [[1]] * (self.gen.batch + 1))

    @rule()
    def generate_next_token(self):
        if not self.gen.batch or self.gen.is_done():
            self.refused(self.gen.generate_next_token)
            return
        running = [self.gen.finish_reason(i) is None for i in range(self.gen.batch)]
        self.gen.generate_next_token()
        chosen = self.gen.get_next_tokens()
        assert chosen.shape == (self.gen.batch,)
        for i, live in enumerate(running):
            if live:
                self.rows[i].append(int(chosen[i]))

    @rule()
    def generate_until_done(self):
        if self.gen.batch:
            while not self.gen.is_done():
                self.generate_next_token()

    @rule(data=st.data())
    def rewind_to(self, data):
        held = len(self.rows[0]) if self.rows else 0
        length = data.draw(mixed(st.just(held), st.integers(-3, 1).map(lambda d: held + d), st.integers(-2, 140), JUNK),
                           label="length")
        if not (self.gen.batch == 1 and is_count(length) and 1 <= length <= len(self.rows[0])):
            self.refused(self.gen.rewind_to, length)
            return
        self.gen.rewind_to(length)
        del self.rows[0][length:]
        assert len(self.gen.get_sequence(0)) == length

    @rule(row=st.integers(-3, 4))
    def stop_row(self, row):
        if not 0 <= row < self.gen.batch:
            self.refused(self.gen.stop_row, row)
            return
        self.gen.stop_row(row)
        assert self.gen.finish_reason(row) == STOP  # a row that had ended too: the caller's stop string is why

    @rule(row=st.integers(-3, 4))
    def read_a_row(self, row):
        if not 0 <= row < self.gen.batch:
            for call in (self.gen.get_sequence, self.gen.get_new_tokens, self.gen.finish_reason, self.gen.is_row_done):
                self.refused(call, row)

    @invariant()
    def rows_agree_with_the_shadow_and_the_limits(self):
        gen = self.gen
        assert gen.batch == len(self.rows)
        for i, want in enumerate(self.rows):
            sequence, new, reason = gen.get_sequence(i), gen.get_new_tokens(i), gen.finish_reason(i)
            assert sequence == want
            assert sequence[len(sequence) - len(new):] == new
            assert all(0 <= t < self.vocab for t in sequence)
            assert len(sequence) <= self.limit, f"row {i} holds {len(sequence)} tokens, over max_context {self.limit}"
            assert len(new) <= self.max_new_tokens, f"row {i} generated {len(new)}, over max_new_tokens"
            assert reason in (None, EOS, LENGTH, CONTEXT, STOP)
            assert gen.is_row_done(i) == (reason is not None)
            if reason == EOS:
                assert sequence[-1] in self.eos
            if reason == LENGTH:
                assert len(new) == self.max_new_tokens
            if reason == CONTEXT:
                assert len(sequence) == self.limit
        assert gen.is_done() == (gen.batch > 0 and all(gen.is_row_done(i) for i in range(gen.batch)))


def test_generator_calls_in_any_order_raise_only_generation_error_and_keep_their_invariants(lm):
    GeneratorCalls.lm = lm
    run_state_machine_as_test(GeneratorCalls, settings=MACHINE)


class OpenBatchCalls(RuleBasedStateMachine):
    """Rows join (add_row), leave (release_row), are stopped and stepped in any order: each row's
    tokens are always a prefix of what its prompt generates alone with its own options, and all of
    them once it ends by itself."""

    lm = None  # set by the test
    solo: ClassVar[dict] = {}  # (prompt ids, params) -> solo tokens, emptied by the test

    @initialize(slots=st.integers(1, 4))
    def start(self, slots):
        special = self.lm.manifest.special_tokens
        self.default = GeneratorParams(max_new_tokens=8)
        self.gen = Generator.open(self.lm.graph, self.default, self.lm.manifest.max_context, slots,
                                  eos=special.eos, pad=special.pad)
        self.slots = slots
        self.rows: dict[int, tuple[list[int], GeneratorParams]] = {}  # row -> (prompt ids, its options)

    def refused(self, call, *args):
        before = [(self.gen.get_sequence(i), self.gen.finish_reason(i)) for i in range(self.slots)]
        with pytest.raises(GenerationError):
            call(*args)
        assert [(self.gen.get_sequence(i), self.gen.finish_reason(i)) for i in range(self.slots)] == before

    @rule(data=st.data(), params=st.one_of(st.none(), st.builds(
        GeneratorParams, max_new_tokens=st.integers(1, 12), temperature=st.sampled_from([0.0, 0.9]),
        top_k=st.sampled_from([0, 20]), repetition_penalty=st.sampled_from([1.0, 1.3]), seed=st.integers(0, 50))))
    def add_row(self, data, params):
        limit = self.lm.manifest.max_context
        ids = data.draw(mixed(st.sampled_from([self.lm.encode(p) for p in FIXED_PROMPTS]),
                              st.lists(st.integers(0, self.lm.graph.vocab_size - 1), min_size=1, max_size=16),
                              st.integers(-1, 2).map(lambda short: [7] * (limit - short))), label="ids")  # at the limit
        if len(self.rows) == self.slots or len(ids) > limit:
            self.refused(self.gen.add_row, ids, params)
            return
        try:
            row = self.gen.add_row(ids, params)
        except GenerationError:
            assert len(ids) == limit  # a prompt with no room left may be refused, nothing else
            return
        assert 0 <= row < self.slots and row not in self.rows
        self.rows[row] = (ids, params or self.default)

    @rule(tokens=st.one_of(BAD_TOKENS, st.just([[1], [2]])))
    def add_bad_row(self, tokens):
        self.refused(self.gen.add_row, tokens)

    @rule(row=st.integers(-2, 5))
    def release_row(self, row):
        if not 0 <= row < self.slots:
            self.refused(self.gen.release_row, row)
            return
        self.gen.release_row(row)
        self.rows.pop(row, None)

    @rule(row=st.integers(-2, 5))
    def stop_row(self, row):
        if not 0 <= row < self.slots:
            self.refused(self.gen.stop_row, row)
            return
        self.gen.stop_row(row)

    @rule()
    def generate_next_token(self):
        if not self.gen.running():
            self.refused(self.gen.generate_next_token)
            return
        self.gen.generate_next_token()

    @invariant()
    def each_row_follows_its_solo_run(self):
        for row in range(self.slots):
            if row not in self.rows:
                assert (self.gen.finish_reason(row), self.gen.get_sequence(row)) == (FREE, [])
                continue
            ids, params = self.rows[row]
            sequence, reason = self.gen.get_sequence(row), self.gen.finish_reason(row)
            solo = solo_tokens(self.lm, ids, params, self.solo)
            assert sequence[:len(ids)] == ids
            assert len(sequence) <= self.lm.manifest.max_context, f"row {row} holds {len(sequence)} tokens, over max_context"
            new = sequence[len(ids):]
            assert new == solo[:len(new)], (row, ids, params)
            if reason in (EOS, LENGTH, CONTEXT):
                assert new == solo
        assert sorted(self.gen.running()) == [r for r in range(self.slots) if self.gen.finish_reason(r) is None]


def test_an_open_batch_in_any_order_gives_each_row_its_solo_tokens(lm):
    OpenBatchCalls.lm, OpenBatchCalls.solo = lm, {}
    run_state_machine_as_test(OpenBatchCalls, settings=MACHINE)
