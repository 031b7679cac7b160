"""`edgelm serve` as a real subprocess on a free loopback port, driven by the official openai client.

References come from the runtime in this process on the same bundles: greedy and seeded output
through the server must equal `LanguageModel.generate`, streamed or not, alone or with other
requests in flight; embeddings must equal `Encoder.embed`. Raw HTTP (httpx) covers the error
bodies, which must be OpenAI's shape.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from openai import OpenAI

from edgelm.runtime import load

pytestmark = pytest.mark.real
KEY = "test-key"
CHAT = [
    [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "请用中文写一首关于雨的短诗。"}],
    [{"role": "user", "content": "Reply with three emoji: 🎉🚀🌧️"}],
]
PLAIN = ["The quick brown fox", "Once upon a time, on a small edge box,"]
SENTENCES = ["A cat sits on the mat.", "Edge boxes run small models.", "雨が降っています。", "🎉 party time"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """An `edgelm serve` subprocess; `url` once /health answers 200."""

    def __init__(self, *args: str, key: str | None = KEY):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "EDGELM_API_KEY"}
        if key:
            env["EDGELM_API_KEY"] = key
        cmd = [sys.executable, "-m", "edgelm.cli", "serve", *args, "--port", str(self.port), "--provider", "cpu", "--threads", "2"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise AssertionError("server did not become healthy in 180 s")

    def client(self, key: str = KEY) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key=key, timeout=120, max_retries=0)

    def post(self, path: str, body, key: str | None = KEY, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(self.url + path, content=content, headers={"Content-Type": "application/json", **headers},
                          timeout=120, **kwargs)

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = re.compile(rf"^{re.escape(name)}{{[^}}]*{re.escape(labels)}[^}}]*}} (\S+)$" if labels else rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
        return sum(float(v) for v in pattern.findall(text))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def server(smollm2_bundle, minilm_bundle, bundles):
    srv = Server(str(smollm2_bundle), str(minilm_bundle), str(bundles("gpt2")[0]), "--name", "smol", "--name", "minilm",
                 "--name", "tiny", "--max-batch", "4", "--max-queue", "48", "--max-tokens-cap", "512", "--max-body", "65536")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def lm(smollm2_bundle):
    return load(smollm2_bundle, provider="cpu", threads=2)


@pytest.fixture(scope="module")
def encoder(minilm_bundle):
    return load(minilm_bundle, provider="cpu", threads=2)


def chat(srv: Server, messages, **options):
    return srv.client().chat.completions.create(model="smol", messages=messages, **options)


def streamed_chat(srv: Server, messages, **options) -> tuple[list, str]:
    chunks = list(srv.client().chat.completions.create(model="smol", messages=messages, stream=True, **options))
    return chunks, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# -- answers equal the runtime's -----------------------------------------------------------------
def test_models_lists_every_served_bundle(server):
    assert sorted(m.id for m in server.client().models.list()) == ["minilm", "smol", "tiny"]


@pytest.mark.parametrize("messages", CHAT, ids=["english", "system", "chinese", "emoji"])
def test_greedy_chat_equals_generate_and_counts_true_tokens(server, lm, messages):
    want = lm.complete([messages], max_new_tokens=24, temperature=0)[0]
    got = chat(server, messages, max_tokens=24, temperature=0)
    assert got.object == "chat.completion" and got.model == "smol"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want.text
    assert got.choices[0].finish_reason == {"eos": "stop", "length": "length"}[want.finish_reason]
    assert got.usage.prompt_tokens == len(lm.encode(messages)) == want.prompt_tokens
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


@pytest.mark.parametrize("messages", CHAT[2:], ids=["chinese", "emoji"])
def test_streamed_deltas_join_to_the_non_streamed_text_with_usage_last(server, lm, messages):
    whole = chat(server, messages, max_tokens=32, temperature=0)
    chunks, text = streamed_chat(server, messages, max_tokens=32, temperature=0, stream_options={"include_usage": True})
    assert text == whole.choices[0].message.content == lm.generate(messages, max_new_tokens=32, temperature=0)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    if "\ufffd" not in text:  # no piece ends inside a character (unless the model itself made invalid bytes)
        assert all("\ufffd" not in (c.choices[0].delta.content or "") for c in chunks[:-1])


def test_completions_take_a_list_of_prompts_and_answer_each_like_generate(server, lm):
    got = server.client().completions.create(model="smol", prompt=PLAIN, max_tokens=16, temperature=0)
    assert [c.index for c in got.choices] == [0, 1]
    assert [c.text for c in got.choices] == [lm.generate(p, max_new_tokens=16, temperature=0) for p in PLAIN]
    assert got.usage.prompt_tokens == sum(len(lm.encode(p)) for p in PLAIN)


def test_a_streamed_completion_joins_to_generate(server, lm):
    chunks = list(server.client().completions.create(model="smol", prompt=PLAIN[1], max_tokens=20, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == lm.generate(PLAIN[1], max_new_tokens=20, temperature=0)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_seeded_sampling_equals_generate_with_the_same_seed(server, lm):
    options = dict(temperature=0.9, top_p=0.95, seed=11)
    got = chat(server, CHAT[1], max_tokens=24, **options).choices[0].message.content
    assert got == lm.generate(CHAT[1], max_new_tokens=24, **options)
    assert got != lm.generate(CHAT[1], max_new_tokens=24, temperature=0.9, top_p=0.95, seed=12)


def test_a_stop_string_cuts_the_text_and_finishes_with_stop(server, lm):
    full = lm.generate(CHAT[0], max_new_tokens=24, temperature=0)
    stop = full.split()[2]  # a word from the middle of the answer
    got = chat(server, CHAT[0], max_tokens=24, temperature=0, stop=[stop, "zzzz"])
    assert got.choices[0].message.content == lm.generate(CHAT[0], max_new_tokens=24, temperature=0, stop=[stop]) == full[:full.index(stop)]
    assert got.choices[0].finish_reason == "stop"
    _, streamed = streamed_chat(server, CHAT[0], max_tokens=24, temperature=0, stop=stop)
    assert streamed == got.choices[0].message.content


def test_max_completion_tokens_is_openais_newer_name_for_max_tokens(server, lm):
    got = chat(server, CHAT[1], max_completion_tokens=5, temperature=0)
    assert got.choices[0].message.content == lm.generate(CHAT[1], max_new_tokens=5, temperature=0)
    assert got.usage.completion_tokens == 5 and got.choices[0].finish_reason == "length"


def test_a_client_that_reads_nothing_does_not_hold_up_the_others(server, lm):
    body = {"model": "smol", "messages": CHAT[0], "max_tokens": 120, "temperature": 0, "stream": True}
    with httpx.Client(timeout=120) as slow:
        with slow.stream("POST", server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as held:
            want = lm.generate(CHAT[1], max_new_tokens=16, temperature=0)  # while the stream is open and unread
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                got = list(pool.map(lambda _: chat(server, CHAT[1], max_tokens=16, temperature=0).choices[0].message.content, range(3)))
            assert got == [want] * 3
            events = [json.loads(line[6:]) for line in held.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert text == lm.generate(CHAT[0], max_new_tokens=120, temperature=0)


def test_greedy_output_is_the_same_with_8_other_requests_in_flight(server, lm):
    """Rows join and leave the running batch (max-batch 4, 9 requests) without changing anyone's tokens."""
    jobs = [(CHAT[i % 4], 8 + 4 * i, i % 2 == 0) for i in range(9)]  # messages, max_tokens, stream
    want = [lm.generate(m, max_new_tokens=n, temperature=0) for m, n, _ in jobs]

    def run(job):
        messages, n, stream = job
        if stream:
            return streamed_chat(server, messages, max_tokens=n, temperature=0)[1]
        return chat(server, messages, max_tokens=n, temperature=0).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        got = list(pool.map(run, jobs))
    assert got == want


def test_a_long_prompt_arriving_mid_stream_prefills_between_steps_and_changes_no_answer(server, lm):
    """Chunked prefill: a ~1,000-token prompt arrives while 3 streams decode; the streams keep receiving tokens
    while it prefills (no gap near its whole prefill), and every answer equals the runtime's alone."""
    long = [{"role": "user", "content": ("The kiosk in the station hums while trains come and go. " * 80) + "Summarize."}]
    streams = [(CHAT[i], 96) for i in range(3)]
    want = [lm.generate(m, max_new_tokens=n, temperature=0) for m, n in streams]
    want_long = lm.generate(long, max_new_tokens=8, temperature=0)
    start = time.perf_counter()
    lm.generate(long, max_new_tokens=1, temperature=0)
    whole_prefill = time.perf_counter() - start

    def timed(job):
        messages, n = job
        stamps, text = [], []
        for chunk in server.client().chat.completions.create(model="smol", messages=messages, max_tokens=n,
                                                             temperature=0, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.perf_counter())
                text.append(chunk.choices[0].delta.content)
        return "".join(text), stamps

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(timed, job) for job in streams]
        time.sleep(1.5)  # the streams are decoding
        arrived = time.perf_counter()
        got_long = chat(server, long, max_tokens=8, temperature=0).choices[0].message.content
        answered = time.perf_counter()
        results = [f.result() for f in running]
    assert [text for text, _ in results] == want and got_long == want_long
    gaps = [b - a for _, stamps in results for a, b in zip(stamps, stamps[1:]) if arrived <= b <= answered]
    assert gaps and max(gaps) < 0.6 * whole_prefill  # without chunks one gap holds the whole prefill


def test_embeddings_equal_encoder_embed_as_floats_and_base64(server, encoder):
    want = encoder.embed(SENTENCES)
    got = server.client().embeddings.create(model="minilm", input=SENTENCES)
    assert [d.index for d in got.data] == list(range(len(SENTENCES)))
    np.testing.assert_allclose(np.asarray([d.embedding for d in got.data]), want, atol=1e-5)
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(encoder.count_tokens(SENTENCES))
    raw = server.post("/v1/embeddings", {"model": "minilm", "input": SENTENCES[0], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, want[0], atol=1e-5)


def test_embedding_requests_arriving_together_each_get_their_own_vectors(server, encoder):
    want = encoder.embed(SENTENCES)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: server.client().embeddings.create(model="minilm", input=SENTENCES[i % 4]), range(16)))
    for i, response in enumerate(got):
        np.testing.assert_allclose(response.data[0].embedding, want[i % 4], atol=1e-5)


# -- load, disconnects, health, metrics ----------------------------------------------------------
def test_sixteen_concurrent_clients_get_every_answer_right_and_the_server_stays_healthy(server, lm):
    prompts = [[{"role": "user", "content": f"Count from {i} to {i + 5}."}] for i in range(6)]
    want = [lm.generate(p, max_new_tokens=8, temperature=0) for p in prompts]
    before = server.metric("edgelm_requests_total", 'endpoint="/v1/chat/completions",model="smol",status="200"')

    def run(i):
        if i % 3 == 0:
            return streamed_chat(server, prompts[i % 6], max_tokens=8, temperature=0)[1]
        return chat(server, prompts[i % 6], max_tokens=8, temperature=0).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(run, range(96)))
    assert got == [want[i % 6] for i in range(96)]
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    after = server.metric("edgelm_requests_total", 'endpoint="/v1/chat/completions",model="smol",status="200"')
    assert after - before == 96
    assert server.metric("edgelm_queue_depth") == 0 and server.metric("edgelm_running_requests") == 0
    assert server.metric("edgelm_time_to_first_token_seconds_count") >= 96


def test_clients_that_disconnect_mid_stream_free_their_rows_at_once(server, lm):
    decoded = server.metric("edgelm_time_per_output_token_seconds_count")
    streams = []
    for i in range(4):  # fills every slot (max-batch 4) with 400-token requests
        stream = server.client().chat.completions.create(model="smol", messages=CHAT[i], max_tokens=400, temperature=0, stream=True)
        next(iter(stream)), next(iter(stream))  # the role chunk, then a first piece
        streams.append(stream)
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + 60
    while server.metric("edgelm_running_requests") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("edgelm_running_requests") == 0
    assert server.metric("edgelm_time_per_output_token_seconds_count") - decoded < 4 * 100  # far from 4 x 400
    want = lm.generate(CHAT[0], max_new_tokens=8, temperature=0)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: chat(server, CHAT[0], max_tokens=8, temperature=0).choices[0].message.content, range(4)))
    assert got == [want] * 4


def test_the_next_chat_turn_reuses_the_cached_prefix_and_answers_as_a_cold_start(server, lm):
    """Prefix reuse through the server: turn 2 resends turn 1 and its answer; the slot that held them prefills only
    the rest (/metrics counts it), and the answer equals the runtime's on the whole prompt."""
    system = {"role": "system", "content": "You answer questions about the weather in a kiosk in a train station. " * 6}
    turn = [system, {"role": "user", "content": "Is it going to rain in Paris today?"}]
    first = chat(server, turn, max_tokens=16, temperature=0).choices[0].message.content
    assert_next_turn_reuses_the_first(server, lm, turn, first, "And tomorrow?", max_tokens=16)


def assert_next_turn_reuses_the_first(server, lm, turn: list[dict], first: str, question: str, max_tokens: int) -> None:
    """The chat's next turn (TURN, its answer FIRST, then QUESTION) prefills only what the cache does not hold: one
    hit, at least the first turn's prompt reused; its MAX_TOKENS answer equals the runtime's cold."""
    hits, reused = server.metric("edgelm_prefix_cache_hits_total"), server.metric("edgelm_prefix_cache_tokens_reused_total")
    turn = [*turn, {"role": "assistant", "content": first}, {"role": "user", "content": question}]
    got = chat(server, turn, max_tokens=max_tokens, temperature=0).choices[0].message.content
    assert got == lm.generate(turn, max_new_tokens=max_tokens, temperature=0)
    assert server.metric("edgelm_prefix_cache_hits_total") == hits + 1
    assert server.metric("edgelm_prefix_cache_tokens_reused_total") - reused >= len(lm.encode(turn[:2]))


ORDER = {"type": "object", "properties": {
    "product": {"type": "string", "maxLength": 40}, "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
    "colour": {"enum": ["red", "green", "blue"]}}, "required": ["product", "quantity", "colour"], "additionalProperties": False}


def test_response_format_json_schema_gives_documents_that_validate_streamed_or_not(server, lm):
    import jsonschema

    messages = [{"role": "user", "content": "I would like 3 red pens, please. Reply in JSON."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "strict": True, "schema": ORDER}}
    got = chat(server, messages, max_tokens=128, temperature=0, response_format=fmt)
    text = got.choices[0].message.content
    assert text == lm.generate(messages, json_schema=ORDER, max_new_tokens=128, temperature=0)
    assert got.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), ORDER)
    _, streamed = streamed_chat(server, messages, max_tokens=128, temperature=0, response_format=fmt)
    assert streamed == text
    sampled = chat(server, messages, max_tokens=128, temperature=0.9, seed=5, response_format=fmt).choices[0].message.content
    jsonschema.validate(json.loads(sampled), ORDER)
    mode = chat(server, [{"role": "user", "content": "Give the name, author and year of the novel Dracula as JSON."}],
                max_tokens=128, temperature=0, response_format={"type": "json_object"}).choices[0]
    assert mode.finish_reason == "stop" and isinstance(json.loads(mode.message.content), dict)


def test_n_choices_share_one_prefill_and_each_equals_generate_with_its_seed(server, lm):
    messages = [{"role": "system", "content": "You write one short line. " * 4}, {"role": "user", "content": "A line about rain."}]
    hits = server.metric("edgelm_prefix_cache_hits_total")
    got = chat(server, messages, max_tokens=16, temperature=0.9, seed=4, n=3)
    assert [c.index for c in got.choices] == [0, 1, 2]
    want = [lm.generate(messages, max_new_tokens=16, temperature=0.9, seed=4 + i) for i in range(3)]
    assert [c.message.content for c in got.choices] == want
    assert len(set(want)) > 1
    assert server.metric("edgelm_prefix_cache_hits_total") - hits >= 2  # choices 1 and 2 copied choice 0's prompt
    assert got.usage.prompt_tokens == len(lm.encode(messages))  # the prompt counts once
    _, streamed = streamed_chat(server, messages, max_tokens=16, temperature=0.9, seed=4)
    assert streamed == want[0]
    chunks = list(server.client().completions.create(model="smol", prompt=PLAIN, max_tokens=8, temperature=0, n=2, stream=True))
    texts = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    alone = [lm.generate(p, max_new_tokens=8, temperature=0) for p in PLAIN]
    assert texts == {0: alone[0], 1: alone[0], 2: alone[1], 3: alone[1]}  # prompt-major, as OpenAI orders choices


def test_logprobs_are_the_runtimes_and_their_tokens_spell_the_text(server, lm):
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    want = lm.complete([messages], max_new_tokens=24, temperature=0, logprobs=3)[0]
    got = chat(server, messages, max_tokens=24, temperature=0, logprobs=True, top_logprobs=3).choices[0]
    content = got.logprobs.content
    assert "".join(t.token for t in content) == got.message.content == want.text
    eos = set(lm.manifest.special_tokens.eos)
    shown = [e for e in want.logprobs if e.token not in eos]  # the eos that ended it is not part of the text
    assert [t.logprob for t in content] == pytest.approx([e.logprob for e in shown], abs=1e-4)
    for t, e in zip(content, shown):
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert t.top_logprobs[0].token == t.token  # greedy: the chosen token is the most likely
    chunks, text = streamed_chat(server, messages, max_tokens=24, temperature=0, logprobs=True)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert "".join(t.token for t in streamed) == text == want.text
    assert all(t.top_logprobs == [] for t in streamed)
    plain = server.client().completions.create(model="smol", prompt=PLAIN[0], max_tokens=8, temperature=0, logprobs=2).choices[0]
    legacy = plain.logprobs
    assert "".join(legacy.tokens) == plain.text
    assert legacy.text_offset == [sum(len(t) for t in legacy.tokens[:i]) for i in range(len(legacy.tokens))]
    assert len(legacy.token_logprobs) == len(legacy.top_logprobs) == len(legacy.tokens)
    assert all(len(alternatives) <= 2 for alternatives in legacy.top_logprobs)
    assert chat(server, messages, max_tokens=4, temperature=0).choices[0].logprobs is None


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}


def test_an_agent_loop_calls_a_tool_gets_its_answer_and_replies(server, lm):
    """The official client's agent loop: a forced call with arguments that validate (streamed or not), the tool's
    answer as a tool message, and a final reply in text."""
    import jsonschema

    messages = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    got = chat(server, messages, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_tokens=64, temperature=0)
    choice = got.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    want = lm.complete([messages], tools=[WEATHER], tool_choice="required", max_new_tokens=64, temperature=0)[0]
    assert json.loads(want.tool_calls[0].arguments) == arguments  # the runtime makes the same call
    chunks = list(server.client().chat.completions.create(model="smol", messages=messages, tools=[WEATHER], stream=True,
                                                          tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                                          parallel_tool_calls=False, max_tokens=64, temperature=0))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(d.index, d.function.name, json.loads(d.function.arguments)) for d in deltas] == [(0, "get_weather", arguments)]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert all(not (c.choices and c.choices[0].delta.content) for c in chunks)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})}]
    final = chat(server, messages, tools=[WEATHER], tool_choice="none", max_tokens=48, temperature=0).choices[0]
    assert final.finish_reason in ("stop", "length") and final.message.tool_calls is None
    assert final.message.content and final.message.content == lm.generate(messages, max_new_tokens=48, temperature=0)


def test_tool_mistakes_get_a_400_naming_the_field(server):
    for body, param in (({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools"),
                        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
                        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format")):
        response = server.post("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], **body})
        assert_error_body(response, 400, param)
    assert_error_body(server.post("/v1/completions", {"model": "smol", "prompt": "Hi", "tools": [WEATHER]}), 400, "tools")


def test_a_chat_whose_slot_was_taken_gets_its_prefix_back_from_the_pool(server, lm):
    """More conversations than slots (--max-batch 4): four other requests take every slot, the chat's prefix moves to
    the pool (--cache-mb's default), and its next turn prefills only what is new, answering as a cold start."""
    system = {"role": "system", "content": "You answer questions about trains for a kiosk in Lyon station. " * 5}
    turn = [system, {"role": "user", "content": "When does the first train to Paris leave?"}]
    first = chat(server, turn, max_tokens=12, temperature=0).choices[0].message.content
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # every slot busy at once: the chat's slot is taken
        list(pool.map(lambda m: chat(server, m, max_tokens=24, temperature=0), CHAT))
    assert_next_turn_reuses_the_first(server, lm, turn, first, "And the last one?", max_tokens=12)
    assert server.metric("edgelm_prefix_pool_bytes", 'model="smol"') > 0


def test_health_and_metrics_answer_without_a_key(server):
    health = httpx.get(server.url + "/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok", "models": ["minilm", "smol", "tiny"]}
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for name in ("edgelm_requests_total", "edgelm_prompt_tokens_total", "edgelm_completion_tokens_total", "edgelm_queue_depth",
                 "edgelm_time_to_first_token_seconds_bucket", "edgelm_time_per_output_token_seconds_bucket",
                 "edgelm_prefix_cache_hits_total", "edgelm_prefix_cache_tokens_reused_total", "edgelm_prefix_pool_bytes"):
        assert name in text


# -- bad input: OpenAI's error body, and the server keeps serving ---------------------------------
LONG = "word " * 8300  # ~8,300 tokens: over SmolLM2's 8,192
BAD = [
    ("/v1/chat/completions", b"{not json", 400, None, None),
    ("/v1/chat/completions", b"[1, 2]", 400, None, None),
    ("/v1/chat/completions", {"model": "nope", "messages": CHAT[0]}, 404, "model", "model_not_found"),
    ("/v1/chat/completions", {"messages": CHAT[0]}, 400, "model", None),
    ("/v1/chat/completions", {"model": "smol", "messages": "hi"}, 400, "messages", None),
    ("/v1/chat/completions", {"model": "smol", "messages": []}, 400, "messages", None),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "temperature": "hot"}, 400, "temperature", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "temperature": 2.5}, 400, "temperature", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "top_p": 0}, 400, "top_p", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "max_tokens": 0}, 400, "max_tokens", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "max_tokens": 1.5}, 400, "max_tokens", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "max_completion_tokens": True}, 400, "max_completion_tokens", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "max_tokens": 600}, 400, "max_tokens", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "seed": "x"}, 400, "seed", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "stop": ["a", ""]}, 400, "stop", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "stream": "yes"}, 400, "stream", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "n": 0}, 400, "n", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "n": 129}, 400, "n", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "logprobs": 3}, 400, "logprobs", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "top_logprobs": 2}, 400, "top_logprobs", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "logprobs": True, "top_logprobs": 21}, 400,
     "top_logprobs", None),
    ("/v1/completions", {"model": "smol", "prompt": "Hi", "logprobs": 6}, 400, "logprobs", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "response_format": {"type": "yaml"}}, 400, "response_format", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "response_format": {"type": "json_schema"}}, 400,
     "response_format", None),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}}}, 400,
     "response_format", None),
    ("/v1/chat/completions", {"model": "smol", "messages": [{"role": "user", "content": LONG}]}, 400, "messages", "context_length_exceeded"),
    ("/v1/chat/completions", {"model": "smol", "messages": CHAT[0], "max_tokens": 500, "x": "y" * 70000}, 413, None, "request_too_large"),
    ("/v1/chat/completions", {"model": "minilm", "messages": CHAT[0]}, 400, "model", None),
    ("/v1/chat/completions", {"model": "tiny", "messages": CHAT[0]}, 400, "messages", None),
    ("/v1/completions", {"model": "smol", "prompt": "  "}, 400, "prompt", None),
    ("/v1/completions", {"model": "smol", "prompt": [1, 2, 3]}, 400, "prompt", None),
    ("/v1/completions", {"model": "smol", "prompt": LONG, "max_tokens": 4}, 400, "prompt", "context_length_exceeded"),
    ("/v1/embeddings", {"model": "smol", "input": "x"}, 400, "model", None),
    ("/v1/embeddings", {"model": "minilm", "input": ""}, 400, "input", None),
    ("/v1/embeddings", {"model": "minilm", "input": [1, 2]}, 400, "input", None),
    ("/v1/embeddings", {"model": "minilm", "input": "x", "encoding_format": "int8"}, 400, "encoding_format", None),
    ("/v1/embeddings", {"model": "minilm", "input": "word " * 600}, 400, "input", "context_length_exceeded"),
]


def assert_error_body(response: httpx.Response, status: int, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
    assert error["param"] == param and error["code"] == code
    return error


@pytest.mark.parametrize("path,body,status,param,code", BAD, ids=[f"{i}" for i in range(len(BAD))])
def test_bad_requests_get_openai_error_bodies(server, path, body, status, param, code):
    error = assert_error_body(server.post(path, body), status, param, code)
    assert error["type"] == "invalid_request_error"
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_a_missing_or_wrong_key_is_refused_and_unknown_routes_get_a_json_404(server):
    assert_error_body(server.post("/v1/chat/completions", {"model": "smol", "messages": CHAT[0]}, key=None), 401, None, "invalid_api_key")
    assert_error_body(server.post("/v1/chat/completions", {"model": "smol", "messages": CHAT[0]}, key="wrong"), 401, None, "invalid_api_key")
    assert_error_body(httpx.get(server.url + "/v1/models", timeout=10), 401, None, "invalid_api_key")
    assert_error_body(server.post("/v1/nothing", {}), 404)
    assert_error_body(httpx.get(server.url + "/v1/chat/completions", timeout=10), 405)


def test_the_official_client_raises_its_own_errors(server):
    import openai

    with pytest.raises(openai.NotFoundError):
        server.client().chat.completions.create(model="nope", messages=CHAT[0])
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    with pytest.raises(openai.BadRequestError) as caught:
        chat(server, [{"role": "user", "content": LONG}])
    assert caught.value.code == "context_length_exceeded"


def test_a_full_queue_answers_429_with_retry_after(smollm2_bundle):
    srv = Server(str(smollm2_bundle), "--name", "smol", "--max-batch", "1", "--max-queue", "1")
    try:
        running = srv.client().chat.completions.create(model="smol", messages=CHAT[0], max_tokens=300, temperature=0, stream=True)
        next(iter(running))  # admitted: it holds the only slot
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(lambda: srv.post("/v1/chat/completions", {"model": "smol", "messages": CHAT[1], "max_tokens": 4}))
            deadline = time.monotonic() + 60
            while srv.metric("edgelm_queue_depth") < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            refused = srv.post("/v1/chat/completions", {"model": "smol", "messages": CHAT[1], "max_tokens": 4})
            assert_error_body(refused, 429, None, "rate_limit_exceeded")
            assert refused.headers["retry-after"] == "1"
            running.close()  # frees the slot: the waiting request runs
            assert waiting.result(timeout=120).status_code == 200
    finally:
        srv.stop()


def test_sigterm_drains_in_flight_requests_then_refuses_new_ones(smollm2_bundle, lm):
    srv = Server(str(smollm2_bundle), "--name", "smol", key=None)
    try:
        stream = srv.client().chat.completions.create(model="smol", messages=CHAT[2], max_tokens=160, temperature=0, stream=True)
        chunks = iter(stream)
        first = [next(chunks), next(chunks)]
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:  # while the stream still runs: a new connection is refused (the socket is closed) or told 503
            assert httpx.get(srv.url + "/health", timeout=5).status_code == 503
        except httpx.ConnectError:
            pass
        rest = list(chunks)
        text = "".join(c.choices[0].delta.content or "" for c in first + rest if c.choices)
        assert text == lm.generate(CHAT[2], max_new_tokens=160, temperature=0)
        assert rest[-1].choices[0].finish_reason in ("stop", "length")
        assert srv.proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url + "/health", timeout=5)
    finally:
        srv.stop()


def test_serve_without_the_extra_names_it_in_one_line(smollm2_bundle):
    blocker = ("import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "
               "from edgelm.cli import main; sys.argv = ['edgelm', 'serve', sys.argv[1]]; main()")
    done = subprocess.run([sys.executable, "-c", blocker, str(smollm2_bundle)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["error: edgelm serve needs the serve extra (starlette is not installed): pip install 'edgelm[serve]'"]


def test_serve_refuses_two_bundles_under_one_name(smollm2_bundle):
    done = subprocess.run([sys.executable, "-m", "edgelm.cli", "serve", str(smollm2_bundle), str(smollm2_bundle)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "give each a --name" in done.stderr and "Traceback" not in done.stderr
