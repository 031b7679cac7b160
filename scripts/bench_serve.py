"""Serve SmolLM2 to 1, 4 and 16 concurrent streaming clients: edgelm serve against llama-cpp-python's server.

    python scripts/bench_serve.py --bundle /work/bundles/smollm2-int8 --gguf /work/peers/models/smollm2-Q8_0.gguf
    python scripts/bench_serve.py ... --write-docs     # also rewrite docs/benchmarks.md's server section

Method. Each server runs alone on the machine, with the same threads (2), started as a
subprocess on a free loopback port and warmed up with one request. For each concurrency C, C
clients (asyncio tasks in this process, raw HTTP + SSE, so the client costs both servers alike)
each send ROUNDS chat requests back to back: the same chat prompts for both servers, greedy,
max_tokens 128, streamed. Time to first token: from sending a request to its first content delta.
Aggregate tokens/s: every completion token generated (usage from edgelm; llama.cpp's server sends
no usage in streams, so one token per content chunk, which is what it sends) over the wall time
of the whole concurrency level. The "direct" row is `LanguageModel.stream` on the same bundle in this
process, one request after another (the bar for a single client: the HTTP layer should cost
under 10%). llama-cpp-python's server runs one request at a time; it is
started with --interrupt_requests False so that a new request does not cut off a running stream
(its default). CI never runs this.

--chat-turns N: one client holds a chat of N turns (each user message ~300 tokens of the evaluation suite's
texts, each answer max_tokens 64), resending the whole history each turn as chat apps do; time to first token
per turn, then the last turn's request again cold (under another system message, so that no cached prefix
matches it). Both servers keep the previous turn's tokens: edgelm in the batch slot it ran in, llama-cpp-python in its
one context.

--before DIR (a checkout of an earlier commit, with --before-python to run it) adds that server to the runs,
so before and after are measured on the same machine in the same run.

--long-prompt N: 8 clients stream long answers (greedy, max_tokens 400); once they decode steadily, a ninth
client sends a prompt of ~N tokens (max_tokens 16). Per stream: its steady gap between two tokens (the median
before the long prompt arrived) and its longest gap after; and the long request's time to first token. edgelm
runs twice, with chunked prefill (the default) and with --no-chunked-prefill (the whole prompt prefilled at
once). llama-cpp-python's server runs one request at a time, so it has no such case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench_serve:begin -->", "<!-- bench_serve:end -->"
PROMPTS = [
    "Write a short story about a lighthouse keeper.", "Explain how rain forms, step by step.",
    "List ten uses for a paperclip.", "Describe the city of Paris to a visitor.",
    "What makes a good cup of tea? Explain.", "Write a poem about the sea.",
    "Give me advice on learning to program.", "Describe a day in the life of a farmer.",
]
console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    wanted = [f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")]
    return f"{model}, {os.cpu_count()} cores (flags: {' '.join(wanted)})"


class Peer:
    def __init__(self, name: str, cmd: list[str], model: str, counts_usage: bool, cwd: str | None = None):
        self.name, self.template, self.model, self.counts_usage = name, cmd, model, counts_usage  # cmd: "{port}" inside
        self.cwd = cwd  # where the server runs (--before: an earlier checkout, whose edgelm `python -m` then imports)

    def __enter__(self):
        """Start the server on a free loopback port ("{port}" in its command) and warm it up with one request."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [c.replace("{port}", str(self.port)) for c in self.template]
        # its log goes to a file: a pipe nobody reads fills up and blocks a chatty server (llama.cpp's load log)
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"bench_serve-{self.name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True, cwd=self.cwd)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {Path(self.log.name).read_text()[-1500:]}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    asyncio.run(level(self, 1, 1, 8))
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        raise SystemExit(f"{self.name} did not start in 300 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def one_request(client: httpx.AsyncClient, peer: Peer, prompt: str, max_tokens: int) -> tuple[float, int]:
    """(seconds to the first content delta, completion tokens) of one streamed chat request."""
    body = {"model": peer.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start, first, chunks, usage = time.perf_counter(), None, 0, None
    async with client.stream("POST", peer.url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    first = first or time.perf_counter()
                    chunks += 1
    return (first or time.perf_counter()) - start, (usage if peer.counts_usage and usage is not None else chunks)


async def level(peer: Peer, clients: int, rounds: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        async def worker(i: int):
            return [await one_request(client, peer, PROMPTS[(i + r) % len(PROMPTS)], max_tokens) for r in range(rounds)]

        start = time.perf_counter()
        results = [x for batch in await asyncio.gather(*(worker(i) for i in range(clients))) for x in batch]
        wall = time.perf_counter() - start
    ttfts = sorted(t for t, _ in results)
    tokens = sum(n for _, n in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
            "ttft_p50": statistics.median(ttfts), "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]}


async def chat_request(client: httpx.AsyncClient, peer: Peer, messages: list[dict],
                       max_tokens: int) -> tuple[float, str, int | None]:
    """(seconds to the first content delta, the answer's text, prompt tokens if the server says) of one streamed
    greedy chat request."""
    body = {"model": peer.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start, first, text, prompt = time.perf_counter(), None, [], None
    async with client.stream("POST", peer.url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                prompt = (chunk.get("usage") or {}).get("prompt_tokens", prompt)
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        first = first or time.perf_counter()
                        text.append(choice["delta"]["content"])
    return (first or time.perf_counter()) - start, "".join(text), prompt


def chat_messages(turns: int) -> list[str]:
    """TURNS user messages of ~300 tokens each: consecutive slices of the evaluation suite's
    prose, technical and legal texts."""
    from edgelm.quantize.eval_suite import domain_text

    words = " ".join(domain_text(d) for d in ("prose", "technical", "legal")).split()
    return [" ".join(words[i * 200:(i + 1) * 200]) + "\nSummarize this in one sentence." for i in range(turns)]


async def chat_turns(peer: Peer, turns: int, max_tokens: int) -> dict:
    """Per-turn TTFT of one chat whose history grows, then its last request cold."""
    messages, ttfts = [{"role": "system", "content": "You are a concise assistant."}], []
    async with httpx.AsyncClient() as client:
        for text in chat_messages(turns):
            messages.append({"role": "user", "content": text})
            ttft, answer, prompt = await chat_request(client, peer, messages, max_tokens)
            ttfts.append(ttft)
            messages.append({"role": "assistant", "content": answer})
        # cold: the same last request under another system message, so no cached prefix matches (a pool holds it)
        other = [{"role": "system", "content": "You are a brief assistant."}, *messages[1:-1]]
        cold, _, _ = await chat_request(client, peer, other, max_tokens)
        metrics = (await client.get(peer.url + "/metrics")).text  # edgelm's reuse counters (llama.cpp has none)
    console.print("\n".join(line for line in metrics.splitlines() if line.startswith("edgelm_prefix_cache")))
    return {"ttfts": ttfts, "cold": cold, "last_prompt_tokens": prompt}


async def stream_gaps(client: httpx.AsyncClient, peer: Peer, prompt: str, max_tokens: int) -> list[float]:
    """The times (perf_counter) of a streamed greedy request's content deltas."""
    body = {"model": peer.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    times = []
    async with client.stream("POST", peer.url + "/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                if any((c.get("delta") or {}).get("content") for c in json.loads(line[6:]).get("choices") or []):
                    times.append(time.perf_counter())
    return times


async def long_prompt(peer: Peer, tokens: int, streams: int = 8) -> dict:
    """Streams' steady and longest gaps around a long prompt's arrival, and that prompt's time to first token."""
    words = " ".join(chat_messages(12)).split()
    text = " ".join(words[:int(tokens * 0.72)]) + "\nSummarize this in one sentence."  # ~1.4 tokens per word
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(limits=limits) as client:
        runs = [asyncio.create_task(stream_gaps(client, peer, PROMPTS[i % len(PROMPTS)], 400)) for i in range(streams)]
        await asyncio.sleep(4.0)  # every stream decoding
        arrived = time.perf_counter()
        ttft, _, prompt_tokens = await chat_request(client, peer, [{"role": "user", "content": text}], 16)
        answered = arrived + ttft
        times = await asyncio.gather(*runs)
    steady, worst = [], []
    for t in times:
        gaps = [(b - a, b) for a, b in zip(t, t[1:])]
        before = [g for g, end in gaps if end < arrived]
        during = [g for g, end in gaps if arrived <= end <= answered + 0.5]
        if before and during:
            steady.append(statistics.median(before))
            worst.append(max(during))
    return {"steady_ms": 1000 * statistics.median(steady), "worst_ms": 1000 * max(worst),
            "ratio": max(w / s for w, s in zip(worst, steady)), "ttft": ttft, "prompt_tokens": prompt_tokens}


def render_long(rows: dict[str, dict], args) -> str:
    tokens = next((r["prompt_tokens"] for r in rows.values() if r["prompt_tokens"]), "?")
    lines = [f"### 8 streams decoding while a {tokens}-token prompt arrives", "",
             f"Machine: {cpu()}. {args.threads} threads; 8 clients stream greedy answers (max_tokens 400), then a ninth "
             f"sends a {tokens}-token prompt (max_tokens 16). Steady gap: a stream's median time between two tokens "
             "before the long prompt; longest gap: its longest while the prompt prefills; the worst stream's ratio.",
             f"Command: `python scripts/bench_serve.py {' '.join(sys.argv[1:])}`.", "",
             "| server | steady gap | longest gap | longest / steady | long prompt's time to first token |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['steady_ms']:.0f} ms | {r['worst_ms']:.0f} ms | **{r['ratio']:.1f}x** | {r['ttft']:.2f} s |")
    return "\n".join(lines)


def render_chat(rows: dict[str, dict], args) -> str:
    turns = args.chat_turns
    lines = [f"### A {turns}-turn chat, one client: time to first token as the history grows", "",
             f"Machine: {cpu()}. {args.threads} threads per server; each user message ~300 tokens, answers up to "
             f"{args.max_tokens} tokens, greedy; the last turn's prompt "
             f"{next((r['last_prompt_tokens'] for r in rows.values() if r['last_prompt_tokens']), '?')} tokens; "
             "cold: the last turn's request under another system message (no cached prefix matches).",
             f"Command: `python scripts/bench_serve.py {' '.join(sys.argv[1:])}`.", "",
             "| server | " + " | ".join(f"turn {i + 1}" for i in range(turns)) + " | last turn cold | last turn vs cold |",
             "|---|" + "---|" * (turns + 2)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{t:.2f} s" for t in r["ttfts"]) +
                     f" | {r['cold']:.2f} s | {r['ttfts'][-1] / r['cold']:.2f}x |")
    if len(rows) == 2:
        (_, a), (peer, b) = rows.items()
        lines += ["", f"Last turn: edgelm {a['ttfts'][-1]:.2f} s against {peer} {b['ttfts'][-1]:.2f} s "
                      f"({a['ttfts'][-1] / b['ttfts'][-1]:.2f}x)."]
    return "\n".join(lines)


def direct(args) -> dict:
    """One client's level without HTTP: LanguageModel.stream in this process, the same prompts and options."""
    from edgelm.runtime import load

    lm = load(args.bundle, provider="cpu", threads=args.threads)
    prompts = [[{"role": "user", "content": PROMPTS[r % len(PROMPTS)]}] for r in range(args.rounds)]
    "".join(lm.stream(prompts[0], max_new_tokens=8, temperature=0))  # warm-up
    ttfts, tokens, start = [], 0, time.perf_counter()
    for messages in prompts:
        sent, stream = time.perf_counter(), lm.stream(messages, max_new_tokens=args.max_tokens, temperature=0)
        try:
            next(stream)
            ttfts.append(time.perf_counter() - sent)
            while True:
                next(stream)
        except StopIteration as finished:
            tokens += len(finished.value.token_ids)
    wall = time.perf_counter() - start
    return {"clients": 1, "requests": len(prompts), "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
            "ttft_p50": statistics.median(ttfts), "ttft_p95": max(ttfts)}


def render(rows: dict[str, list[dict]], args) -> str:
    lines = [
        "### `edgelm serve` against llama-cpp-python's server (SmolLM2-135M-Instruct, 8-bit)",
        "",
        f"Machine: {cpu()}; Python {platform.python_version()}. {args.threads} threads per server, each server alone on the "
        f"machine; C clients each send {args.rounds} streamed greedy chat requests (max_tokens {args.max_tokens}) back to back. "
        f"edgelm: `{Path(args.bundle).name}`, --max-batch {args.max_batch}"
        + (f"; llama.cpp: `{Path(args.gguf).name}`, one request at a time (--interrupt_requests False)." if args.gguf else "."),
        f"Command: `python scripts/bench_serve.py {' '.join(sys.argv[1:])}`.",
        "",
        "| server | clients | requests | tokens | aggregate tok/s | TTFT p50 (s) | TTFT p95 (s) | vs its own 1 client | vs llama.cpp, same clients |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    peer = {r["clients"]: r for r in rows.get("llama.cpp", [])}
    before = {r["clients"]: r for r in rows.get("edgelm, before", [])}
    for name, results in rows.items():
        alone = next((r["tok_s"] for r in results if r["clients"] == 1), None)
        for r in results:
            ratio = f"{r['tok_s'] / peer[r['clients']]['tok_s']:.2f}x" if name != "llama.cpp" and r["clients"] in peer else ""
            own = f"{r['tok_s'] / alone:.2f}x" if alone and r["clients"] > 1 else ""
            lines.append(f"| {name} | {r['clients']} | {r['requests']} | {r['tokens']} | {r['tok_s']:.1f} | {r['ttft_p50']:.2f} | "
                         f"{r['ttft_p95']:.2f} | {own} | {ratio} |")
    if before:
        lines += ["", "edgelm against `edgelm, before` (--before, the same run): " + ", ".join(
            f"{r['clients']} clients {r['tok_s'] / before[r['clients']]['tok_s']:.2f}x tok/s" for r in rows.get("edgelm", [])
            if r["clients"] in before) + "."]
    direct_row = rows.get("direct (LanguageModel.stream)", [None])[0]
    served = next((r for r in rows.get("edgelm", []) if r["clients"] == 1), None)
    if direct_row and served:
        lines += ["", f"One client through the server: {served['tok_s'] / direct_row['tok_s']:.2f}x the tokens/s of "
                      "`LanguageModel.stream` called directly."]
    return "\n".join(lines)


def write_docs(table: str) -> None:
    text = DOCS.read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Serving many clients (issue 9)\n\n" + block + "\n"
    DOCS.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="edgelm decoder bundle (the INT8 one)")
    p.add_argument("--gguf", help="GGUF for llama-cpp-python's server (Q8_0); leave out to run edgelm alone")
    p.add_argument("--llama-python", default="/work/peers/llama/bin/python", help="venv with llama-cpp-python[server]")
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--rounds", type=int, default=2, help="requests per client per level [2]")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chat-turns", type=int, default=0, help="measure one client's multi-turn chat instead (see above)")
    p.add_argument("--long-prompt", type=int, default=0, help="measure 8 streams while a prompt of N tokens arrives (see above)")
    p.add_argument("--before", metavar="DIR", help="also run the server of an earlier checkout in DIR (with DIR's "
                   "--before-python), to compare before and after in one run")
    p.add_argument("--before-python", default=sys.executable, help="the Python that runs --before's server")
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    serve_args = ["serve", str(Path(args.bundle).resolve()), "--name", "smol", "--port", "{port}", "--threads", str(args.threads),
                  "--provider", "cpu", "--max-batch", str(args.max_batch), "--max-queue", "256"]
    peers = [Peer("edgelm", [sys.executable, "-m", "edgelm.cli", *serve_args], "smol", True, cwd=str(ROOT))]
    if args.before:
        peers.append(Peer("edgelm, before", [args.before_python, "-m", "edgelm.cli", *serve_args], "smol", True, cwd=args.before))
    if args.gguf:
        peers.append(Peer("llama.cpp", [args.llama_python, "-m", "llama_cpp.server", "--model", args.gguf, "--n_threads",
                                        str(args.threads), "--n_threads_batch", str(args.threads), "--model_alias", "smol",
                                        "--n_ctx", "2048", "--interrupt_requests", "False", "--port", "{port}"], "smol", False))
    if args.long_prompt:
        found = {}
        runs = [Peer("edgelm, chunked prefill", peers[0].template + ["--chunked-prefill"], "smol", True, cwd=str(ROOT)),
                Peer("edgelm, --no-chunked-prefill", peers[0].template + ["--no-chunked-prefill"], "smol", True, cwd=str(ROOT)),
                *[p for p in peers if p.name == "edgelm, before"]]
        for run in runs:
            with run as peer:
                found[peer.name] = asyncio.run(long_prompt(peer, args.long_prompt))
                console.print(f"{peer.name}: {found[peer.name]}")
        print(render_long(found, args))
        return
    if args.chat_turns:
        args.max_tokens = min(args.max_tokens, 64)
        chats = {}
        for peer in peers:
            with peer:
                chats[peer.name] = asyncio.run(chat_turns(peer, args.chat_turns, args.max_tokens))
                console.print(f"{peer.name}: {chats[peer.name]}")
        print(render_chat(chats, args))
        return
    rows: dict[str, list[dict]] = {"direct (LanguageModel.stream)": [direct(args)]}
    with Progress(console=console) as progress:
        task = progress.add_task("serving", total=len(peers) * len(levels))
        for peer in peers:
            with peer:
                for clients in levels:
                    progress.update(task, description=f"{peer.name}: {clients} clients")
                    rows.setdefault(peer.name, []).append(asyncio.run(level(peer, clients, args.rounds, args.max_tokens)))
                    console.print(f"{peer.name} {clients} clients: {rows[peer.name][-1]}")
                    progress.advance(task)
    table = render(rows, args)
    print(table)
    if args.write_docs:
        write_docs(table)


if __name__ == "__main__":
    main()
