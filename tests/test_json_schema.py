"""Structured output: constrained decoding to a JSON schema (runtime/json_schema.py) on tiny random models.

A random model's choices are as far from JSON as text gets, so whatever the schema lets through is
what the constraint enforces: every output that ends (eos) must parse and validate. Hypothesis
draws the schemas (nested objects, arrays, enums, required fields, bounded numbers and strings).
The real model's schemas: tests/test_real_models.py.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgelm.errors import GenerationError
from edgelm.runtime import load

PROMPT = "Reply with JSON:"


@pytest.fixture(scope="module")
def lm(bundles):
    return load(bundles("llama")[0], provider="cpu")


def leaf() -> st.SearchStrategy[dict]:
    bounds = st.tuples(st.integers(-1000, 1000), st.integers(0, 1000)).map(lambda t: (t[0], t[0] + t[1]))
    return st.one_of(
        st.integers(0, 6).map(lambda n: {"type": "string", "maxLength": n}),
        bounds.map(lambda b: {"type": "integer", "minimum": b[0], "maximum": b[1]}),
        bounds.map(lambda b: {"type": "number", "minimum": b[0], "maximum": b[1]}),
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.lists(st.text("abcxyz", min_size=1, max_size=5), min_size=1, max_size=4, unique=True).map(lambda v: {"enum": v}),
    )


def objects(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    def build(props: dict, required: list[bool]) -> dict:
        names = sorted(props)
        return {"type": "object", "properties": props, "additionalProperties": False,
                "required": [n for n, r in zip(names, required) if r]}

    props = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), children, min_size=1, max_size=4)
    return st.builds(build, props, st.lists(st.booleans(), min_size=4, max_size=4))


SCHEMAS = st.recursive(
    leaf(),
    lambda inner: st.one_of(
        objects(inner),
        st.tuples(inner, st.integers(0, 2), st.integers(0, 2)).map(
            lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + t[2]}),
    ),
    max_leaves=6,
).filter(lambda s: s.get("type") in ("object", "array"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_every_finished_output_parses_and_validates(lm, schema, seed):
    completion = lm.complete([PROMPT], json_schema=schema, max_new_tokens=120, temperature=1.0, seed=seed)[0]
    assert completion.finish_reason in ("eos", "length", "context")  # the tiny model holds 128 tokens
    if completion.finish_reason == "eos":
        jsonschema.validate(json.loads(completion.text), schema)


def test_documents_end_on_their_own(lm):
    """The property above is not vacuous: bounded schemas end with eos, and sampling varies the document."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "s": {"enum": ["a", "b", "c"]}, "t": {"type": "boolean"}},
              "required": ["n", "s", "t"], "additionalProperties": False}
    done = lm.complete([PROMPT] * 8, json_schema=schema, max_new_tokens=60, temperature=1.0, seed=1)
    assert all(c.finish_reason == "eos" for c in done)
    for c in done:
        jsonschema.validate(json.loads(c.text), schema)
    texts = {lm.generate(PROMPT, json_schema=schema, max_new_tokens=60, temperature=1.0, seed=s) for s in range(6)}
    assert len(texts) > 1


def test_json_mode_gives_an_object_and_greedy_streams_what_generate_gives(lm):
    text = lm.generate(PROMPT, json_schema={"type": "object"}, max_new_tokens=400, temperature=1.0, seed=7)
    assert text.startswith("{")
    streamed = "".join(lm.stream(PROMPT, json_schema='{"type": "array", "items": {"type": "integer"}, "maxItems": 3}',
                                 max_new_tokens=60))
    assert streamed == lm.generate(PROMPT, json_schema={"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                                   max_new_tokens=60)
    assert streamed.startswith("[")


def test_a_constrained_row_leaves_the_others_in_its_batch_alone(lm):
    schema = {"type": "array", "items": {"enum": ["x", "y"]}, "maxItems": 4}
    free = lm.complete([PROMPT, "Once upon a time"], max_new_tokens=12)
    from edgelm.runtime.text_batch import TextBatch

    batch = TextBatch(lm, slots=2)
    ids = [lm.encode(p) for p in (PROMPT, "Once upon a time")]
    constrained = batch.add(ids[0], lm.params(max_new_tokens=40), rule=lm.json_grammar(schema).rule())
    plain = batch.add(ids[1], lm.params(max_new_tokens=12))
    while batch.running:
        batch.step()
    assert batch.text(plain) == free[1].text
    jsonschema.validate(json.loads(batch.text(constrained)), schema)


@pytest.mark.parametrize("schema, named", [
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "not": {"required": ["a"]}}, "not"),
    ("{not json", "not valid JSON"),
    ([1, 2], "must be a JSON object"),
])
def test_a_schema_it_cannot_enforce_is_refused_by_name(lm, schema, named):
    with pytest.raises(GenerationError, match=named):
        lm.generate(PROMPT, json_schema=schema, max_new_tokens=4)
