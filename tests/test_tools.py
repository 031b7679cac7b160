"""Tool calls (runtime/tools.py): definitions checked, prompts prepared, replies parsed, and calls kept valid by
constrained decoding on a tiny random model (whose choices are as far from a valid call as text gets).

The server's side (the official openai client, an agent loop on SmolLM2): tests/test_serve.py.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgelm.errors import GenerationError
from edgelm.runtime import load
from edgelm.runtime.chat_template import knows_tools, render_chat
from edgelm.runtime.text_batch import TextBatch
from edgelm.runtime.tools import CLOSE, HERMES as HERMES_FORMAT, LLAMA3, OPEN, ToolSet, ToolText, tool_format
from tests.test_json_schema import leaf, objects

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}}, "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]

# A Hermes-style template that renders tools itself, as Qwen 2.5's does (written here for the test).
HERMES = """{%- if tools %}<|im_start|>system
# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


# The custom-tools part of Meta's Llama 3.1 template (as transformers ships it; 3.2 and 3.3 ask the same), written
# here for the test: tools in the first user message, one bare {"name", "parameters"} object per reply.
LLAMA31 = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}
{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" + system_message + "<|eot_id|>" }}
{%- if tools is not none and tools %}
{%- set first_user_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}
{{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
{{- "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n" }}
{{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
{{- "Do not use variables.\n\n" }}
{%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\n\n" }}{%- endfor %}
{{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
{%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- elif 'tool_calls' in message %}
{%- set tool_call = message.tool_calls[0].function %}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{{- '{"name": "' + tool_call.name + '", "parameters": ' + tool_call.arguments | tojson + "}<|eot_id|>" }}
{%- else %}
{{- "<|start_header_id|>ipython<|end_header_id|>\n\n" + message.content | tojson + "<|eot_id|>" }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}"""


@pytest.fixture(scope="module")
def lm(bundles):
    return load(bundles("llama")[0], provider="cpu")


# -- definitions and prompts ---------------------------------------------------------------------
@pytest.mark.parametrize("tools, choice, named", [
    ([{"type": "function"}], None, r"tools\[0\] must be"),
    ([{"type": "function", "function": {"name": "a b"}}], None, "name must be"),
    ([WEATHER, WEATHER], None, "twice"),
    ([WEATHER], "sometimes", "tool_choice must be"),
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "not in tools"),
    (None, "required", "tool_choice needs tools"),
])
def test_bad_tool_definitions_are_refused_by_name(tools, choice, named):
    with pytest.raises(GenerationError, match=named):
        ToolSet.of(tools, choice)


def test_none_turns_tools_off_and_a_named_choice_is_that_function():
    assert ToolSet.of([WEATHER], "none") is None
    assert ToolSet.of([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}}).choice == "get_time"


def test_a_template_without_tools_gets_them_in_the_system_message_and_history_as_text():
    toolset = ToolSet.of([WEATHER])
    history = [{"role": "system", "content": "Be brief."}, *ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
    prepared = toolset.prepare(history, template_knows_tools=False)
    assert prepared[0]["content"].startswith("Be brief.\n\n# Tools") and '"name": "get_weather"' in prepared[0]["content"]
    assert prepared[2] == {"role": "assistant", "content": f'{OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\n{CLOSE}'}
    assert prepared[3] == {"role": "user", "content": "<tool_response>\n18 C, sunny\n</tool_response>"}


def test_a_template_that_renders_tools_gets_them_and_calls_with_arguments_as_objects():
    assert knows_tools(HERMES) and not knows_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    toolset = ToolSet.of([WEATHER])
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c", "content": "18 C"}]
    text = render_chat(HERMES, toolset.prepare(history, True), {}, True, list(toolset.tools))
    assert '"name": "get_weather", "description": "The weather in a city now"' in text
    assert f'{OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\n{CLOSE}' in text
    assert "<tool_response>\n18 C\n</tool_response>" in text and text.endswith("<|im_start|>assistant\n")


# -- replies -------------------------------------------------------------------------------------
def test_a_reply_splits_into_its_text_and_its_calls():
    toolset = ToolSet.of([WEATHER, TIME])
    content, calls = toolset.parse(f'Let me check. {OPEN}\n{{"name": "get_weather", "arguments": {{"city": "Oslo"}}}}\n{CLOSE}'
                                   f'\n{OPEN}\n{{"name": "get_time", "arguments": {{"zone": "CET"}}}}\n{CLOSE}')
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "CET"})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert toolset.parse("No calls here.") == ("No calls here.", [])
    assert toolset.parse(f"So: {OPEN} not json {CLOSE}") == ("So:", [])  # as streamed: text ends where a call begins
    assert toolset.parse(f'Wait. {OPEN}\n{{"name": "get_weather", "argu') == ("Wait.", [])  # a call cut by max_tokens
    assert len(ToolSet.of([WEATHER], parallel=False).parse(f"{OPEN}{{\"name\": \"a\", \"arguments\": {{}}}}{CLOSE}" * 2)[1]) == 1


@pytest.mark.parametrize("cut", range(1, 12))
def test_streamed_text_stops_where_a_call_begins_however_the_pieces_fall(cut):
    reply = f'Checking now. {OPEN}\n{{"name": "get_weather"}}\n{CLOSE}'
    shown = ToolText()
    pieces = [reply[i:i + cut] for i in range(0, len(reply), cut)]
    text = "".join(shown.feed(p) for p in pieces) + shown.finish()
    assert text == "Checking now." and shown.calling
    plain = ToolText()
    assert "".join(plain.feed(p) for p in ["a <tool", " b <", "to"]) + plain.finish() == "a <tool b <to"


# -- decoding ------------------------------------------------------------------------------------
PARAMETERS = objects(leaf())


def decode(lm, toolset: ToolSet, seeds: list[int], max_new_tokens: int = 110):
    """Rows of a short prompt under TOOLSET's constraint (the tiny model's 128-token context holds no rendered tool
    list: rendering is tested above and on SmolLM2), parsed as the runtime parses replies."""
    batch = TextBatch(lm, slots=len(seeds))
    grammar = toolset.grammar(lm.vocabulary())
    rows = [batch.add(lm.encode("Do it:"), lm.params(max_new_tokens=max_new_tokens, temperature=1.0, seed=s),
                      rule=grammar.rule()) for s in seeds]
    while batch.running:
        batch.step()
    return [(batch.finish_reason(r), *toolset.parse(batch.text(r))) for r in rows]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(parameters=PARAMETERS, seed=st.integers(0, 2**16), named=st.booleans())
def test_required_and_named_calls_always_have_arguments_that_validate(lm, parameters, seed, named):
    tool = {"type": "function", "function": {"name": "act", "parameters": parameters}}
    choice = {"type": "function", "function": {"name": "act"}} if named else "required"
    [(reason, text, calls)] = decode(lm, ToolSet.of([tool, TIME], choice), [seed])
    if reason in ("length", "context"):  # cut by the tiny model's 128-token context: nothing to check
        return
    assert reason == "eos" and text == "" and calls
    for call in calls:
        assert call.name == "act" or (not named and call.name == "get_time")
        schema = parameters if call.name == "act" else TIME["function"]["parameters"]
        jsonschema.validate(json.loads(call.arguments), schema)


def test_forced_calls_end_on_their_own(lm):
    """The property above is not vacuous: bounded parameters give whole calls, and one call without parallel_tool_calls."""
    single = decode(lm, ToolSet.of([WEATHER], "required", parallel=False), list(range(6)))
    several = decode(lm, ToolSet.of([WEATHER], "required"), list(range(6)))  # a random model may go on calling
    assert [reason for reason, _, _ in single] == ["eos"] * 6 and any(reason == "eos" for reason, _, _ in several)
    for reason, text, calls in single + several:
        assert text == "" and len(calls) >= 1
        for call in calls:
            jsonschema.validate(json.loads(call.arguments), WEATHER["function"]["parameters"])
    assert all(len(calls) == 1 for _, _, calls in single)


def test_auto_is_free_text_until_a_call_starts_then_the_call_is_constrained_until_it_closes(lm):
    vocab = lm.vocabulary()
    rule = ToolSet.of([WEATHER]).grammar(vocab).rule()
    scores = np.zeros((1, lm.graph.vocab_size), dtype=np.float32)
    assert np.isfinite(rule.restrict(scores.copy())).all()  # free text: nothing masked
    for token in lm.tokenizer.encode("Let me look. " + OPEN, add_special_tokens=False).ids:
        rule.consume(token)
    allowed = np.isfinite(rule.restrict(scores.copy())[0])
    assert 0 < allowed.sum() < 50  # inside the call: only what can begin '\n{"name": ...' or '{"name": ...'
    call = '\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n' + CLOSE
    for token in lm.tokenizer.encode(call, add_special_tokens=False).ids:
        assert np.isfinite(rule.restrict(scores.copy())[0, token]), token
        rule.consume(token)
    assert np.isfinite(rule.restrict(scores.copy())).all()  # closed: free again
    with pytest.raises(GenerationError):
        rule2 = ToolSet.of([WEATHER]).grammar(vocab).rule()
        for token in lm.tokenizer.encode(OPEN + '\n{"name": "get_time"', add_special_tokens=False).ids:
            rule2.consume(token)


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_the_python_stream_shows_the_text_before_a_call_and_returns_the_calls(lm, choice):
    """lm.stream(tools=...): joined pieces equal the completion's text (what precedes any call, never the call),
    and the run's Completion (the generator's return value) carries the same calls as lm.complete's."""
    for seed in range(4):
        options = dict(chat=True, tools=[WEATHER], tool_choice=choice, max_new_tokens=60, temperature=1.0, seed=seed,
                       truncate_prompt=True)  # the tiny model's context is 128 tokens
        stream = lm.stream(ASK, **options)
        pieces = []
        while True:
            try:
                pieces.append(next(stream))
            except StopIteration as finished:
                streamed = finished.value
                break
        [whole] = lm.complete([ASK], **options)
        assert "".join(pieces) == streamed.text == whole.text
        assert OPEN not in streamed.text
        assert [(c.name, c.arguments) for c in streamed.tool_calls] == [(c.name, c.arguments) for c in whole.tool_calls]
        assert streamed.finish_reason == whole.finish_reason
        if choice == "required" and streamed.finish_reason == "tool_calls":
            assert streamed.text == "" and streamed.tool_calls
            jsonschema.validate(json.loads(streamed.tool_calls[0].arguments), WEATHER["function"]["parameters"])


# -- Llama 3's format ------------------------------------------------------------------------------
def test_the_call_format_is_the_one_the_template_asks_for():
    assert tool_format(LLAMA31, knows_tools(LLAMA31)) is LLAMA3
    assert tool_format(HERMES, knows_tools(HERMES)) is HERMES_FORMAT
    plain = "{% for m in messages %}{{ m.content }}{% endfor %}"  # knows no tools: told Hermes' format
    assert tool_format(plain, knows_tools(plain)) is HERMES_FORMAT


def test_a_llama3_reply_is_bare_objects_with_parameters():
    toolset = ToolSet.of([WEATHER, TIME]).using(LLAMA3)
    text, calls = toolset.parse('{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}')
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo", "unit": "celsius"})]
    text, calls = toolset.parse('{"name": "get_time", "parameters": {"zone": "CET"}}; '
                                '{"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert text == "" and [c.name for c in calls] == ["get_time", "get_weather"]
    assert toolset.parse("Oslo is sunny today.") == ("Oslo is sunny today.", [])
    assert toolset.parse('Sure. {"name": "get_weather", "param') == ("Sure.", [])  # cut by max_tokens
    assert toolset.parse('{"name": "launch", "parameters": {}}') == ("", [])  # a function nobody offered
    shown = ToolText(LLAMA3)
    pieces = ["Sure", '. {"na', 'me": "get_time", ', '"parameters": {}}']
    assert "".join(shown.feed(p) for p in pieces) + shown.finish() == "Sure." and shown.calling


def test_llama3_forced_calls_are_one_bare_object_that_validates_and_auto_is_free(lm):
    for reason, text, calls in decode(lm, ToolSet.of([WEATHER], "required").using(LLAMA3), list(range(4))):
        assert reason == "eos" and text == "" and len(calls) == 1 and calls[0].name == "get_weather"
        jsonschema.validate(json.loads(calls[0].arguments), WEATHER["function"]["parameters"])
    assert ToolSet.of([WEATHER]).using(LLAMA3).grammar(lm.vocabulary()).rule() is None  # auto: parsed, not constrained


def test_a_llama3_template_gets_tools_history_and_calls_in_its_own_format(lm, monkeypatch):
    monkeypatch.setattr(lm, "_template", LLAMA31)
    assert lm.tool_format is LLAMA3
    toolset = ToolSet.of([WEATHER]).using(LLAMA3)
    assert '"parameters": dictionary of argument name' in lm.render_chat(ASK, tools=toolset)
    earlier = [*ASK, {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'}}]}, {"role": "tool", "content": "sunny"}]
    assert '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}' in lm.render_chat(earlier, tools=toolset)
    options = dict(chat=True, tools=[WEATHER], tool_choice="required", max_new_tokens=100, temperature=1.0,
                   truncate_prompt=True)  # the tiny model's context is 128 tokens: the prompt's newest 28
    made = [lm.complete([ASK], seed=seed, **options)[0] for seed in range(4)]
    assert all(OPEN not in c.text and c.text == "" for c in made)
    called = [c for c in made if c.finish_reason == "tool_calls"]
    assert called and all(json.loads(lm.tokenizer.decode(c.token_ids, skip_special_tokens=True)).get("parameters")
                          is not None for c in called)  # the model wrote Llama's object, not a Hermes block
    for c in called:
        jsonschema.validate(json.loads(c.tool_calls[0].arguments), WEATHER["function"]["parameters"])
