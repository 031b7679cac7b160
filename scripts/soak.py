"""Soak: 2,000 generate calls and one 4,000-token generation on the real SmolLM2 INT8 bundle, watching RSS.

    python scripts/soak.py --models .models --out out [--calls 2000] [--long 4000] [--write-docs]

(`make soak` runs it.) Resident memory is read after a warm-up, then every 100 calls: it must stay
flat (growth under --max-growth-mb), and during the long generation it may grow by at most the
KV cache that one 4,000-token sequence needs (plus --max-growth-mb). Prints a table, exits 1 when
a limit is broken; --write-docs puts the table into docs/reliability.md. Too long for CI.
"""

from __future__ import annotations

import gc
import platform
import sys
import time
from pathlib import Path

import click
import psutil
from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
PROMPTS = [
    "Write a haiku about the sea.", "What is the capital of France?", "List three prime numbers.",
    "Explain rain to a child.", "Translate 'good morning' into Spanish.", "Give me a name for a cat.",
    "Why is the sky blue?", "Describe a kiosk in one sentence.", "What is 12 times 7?", "Say hello in Chinese: 你好?",
    "Tell me a fact about owls 🦉.", "Summarise: the meeting moved to Tuesday.",
]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def ensure_bundle(models: Path, out: Path) -> Path:
    """out/smollm2-int8, exported and quantized once (as `make demo` does) when it is not there yet."""
    bundle = out / "smollm2-int8"
    if (bundle / "manifest.json").is_file():
        return bundle
    from edgelm.export import export
    from edgelm.quantize import QuantizeOptions, default_method, quantize

    export(models / "SmolLM2-135M-Instruct.Q4_1.gguf", out / "smollm2", "text-generation", force=True)
    quantize(out / "smollm2", bundle, QuantizeOptions(method=default_method(True)), force=True)
    return bundle


def kv_bytes(manifest, tokens: int) -> int:
    kv = manifest.kv_cache
    itemsize = 1 if kv.dtype == "int8" else 4
    return 2 * kv.num_layers * kv.num_kv_heads * kv.head_size * itemsize * tokens


def many_calls(lm, calls: int, samples: list, progress: Progress) -> None:
    """CALLS generate/stream calls of mixed kinds; RSS recorded every 100."""
    task = progress.add_task("generate calls", total=calls)
    for i in range(calls):
        prompt = PROMPTS[i % len(PROMPTS)]
        kind = i % 4
        if kind == 0:
            lm.generate(prompt, chat=True, max_new_tokens=8)
        elif kind == 1:
            "".join(lm.stream(prompt, chat=True, max_new_tokens=8, temperature=0.8, seed=i))
        elif kind == 2:
            lm.generate([prompt, PROMPTS[(i + 1) % len(PROMPTS)]], chat=True, max_new_tokens=8, stop=["."])
        else:
            lm.generate(prompt, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=i)
        progress.advance(task)
        if (i + 1) % 100 == 0:
            gc.collect()
            samples.append((f"after {i + 1} calls", rss_mb()))


def long_generation(lm, tokens: int, progress: Progress) -> tuple[float, float, int]:
    """TOKENS new tokens for one chat prompt, eos ignored; returns (peak RSS, seconds, tokens)."""
    from edgelm.runtime.generator import Generator, GeneratorParams

    ids = lm.encode("Tell me a very long story about a lighthouse keeper.", chat=True)
    gen = Generator(lm.graph, GeneratorParams(max_new_tokens=tokens), lm.manifest.max_context)  # no eos: full length
    gen.append_tokens(ids)
    task = progress.add_task(f"{tokens}-token generation", total=tokens)
    peak, start = rss_mb(), time.perf_counter()
    while not gen.is_done():
        gen.generate_next_token()
        progress.advance(task)
        if len(gen.get_new_tokens(0)) % 250 == 0:
            peak = max(peak, rss_mb())
    seconds = time.perf_counter() - start
    return max(peak, rss_mb()), seconds, len(gen.get_new_tokens(0))


@click.command()
@click.option("--models", type=click.Path(path_type=Path), default=ROOT / ".models", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "out", show_default=True)
@click.option("--calls", type=int, default=2000, show_default=True)
@click.option("--long", "long_tokens", type=int, default=4000, show_default=True)
@click.option("--max-growth-mb", type=float, default=25.0, show_default=True, help="Allowed RSS growth beyond the KV cache.")
@click.option("--write-docs", is_flag=True, help="Put the table into docs/reliability.md.")
def main(models: Path, out: Path, calls: int, long_tokens: int, max_growth_mb: float, write_docs: bool):
    from edgelm.runtime import load

    console = Console(stderr=True)
    bundle = ensure_bundle(models, out)
    lm = load(bundle, provider="cpu")
    samples = [("loaded", rss_mb())]
    with Progress(console=console, transient=True) as progress:
        many_calls(lm, 50, [], progress)  # warm-up: arenas, caches and lazily built bindings settle
        gc.collect()
        samples.append(("after 50 warm-up calls", rss_mb()))
        start = time.perf_counter()
        many_calls(lm, calls, samples, progress)
        calls_seconds = time.perf_counter() - start
        peak, long_seconds, made = long_generation(lm, long_tokens, progress)
        gc.collect()
        samples.append((f"during the {made}-token generation (peak)", peak))
        samples.append(("after it ended", rss_mb()))
        many_calls(lm, 200, [], progress)
        gc.collect()
        samples.append(("after 200 more calls", rss_mb()))

    warm = samples[1][1]
    during_calls = [mb for label, mb in samples if label.startswith("after ") and "calls" in label and "warm" not in label
                    and "more" not in label]
    growth = max(during_calls) - warm
    cache_mb = kv_bytes(lm.manifest, len(lm.encode(PROMPTS[0], chat=True)) + long_tokens) / 2**20
    long_growth = peak - warm
    checks = [
        (f"RSS growth over {calls} calls after warm-up", f"{growth:+.1f} MB", f"<= {max_growth_mb:.0f} MB", growth <= max_growth_mb),
        (f"RSS growth during the {made}-token generation", f"{long_growth:+.1f} MB",
         f"<= KV cache {cache_mb:.0f} MB + {max_growth_mb:.0f} MB", long_growth <= cache_mb + max_growth_mb),
    ]
    lines = [
        f"Machine: {_cpu_model()} ({psutil.cpu_count()} CPUs), Python {platform.python_version()}; bundle "
        f"`{bundle.name}` ({lm.manifest.precision.get('method')}); {calls} calls took {calls_seconds:.0f} s "
        f"(generate, stream, a batch of two with a stop string, sampled; 8 new tokens each); the long generation "
        f"made {made} tokens in {long_seconds:.0f} s ({made / long_seconds:.1f} tokens/s).",
        "",
        "| point | RSS (MB) |", "|---|---|",
        *[f"| {label} | {mb:.1f} |" for label, mb in samples],
        "",
        "| check | measured | limit | met |", "|---|---|---|---|",
        *[f"| {name} | {value} | {limit} | {'yes' if ok else '**no**'} |" for name, value, limit, ok in checks],
    ]
    table = "\n".join(lines)
    print(table)
    if write_docs:
        path = ROOT / "docs" / "reliability.md"
        text = path.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
        console.print(f"wrote the soak table into {path}")
    sys.exit(0 if all(ok for *_, ok in checks) else 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
