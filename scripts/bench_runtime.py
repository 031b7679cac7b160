"""Benchmark a bundle on this machine against transformers on the same model, in the same run.

    python scripts/bench_runtime.py out/smollm2 [--source .models/SmolLM2-135M-Instruct.Q4_1.gguf]
    python scripts/bench_runtime.py out/minilm --markdown docs/benchmarks.md

Decoders: time to first token (prefill + first choice), decode tokens/s over N greedy tokens
(eos ignored, so both engines make exactly N), peak resident memory. transformers runs its own
eager `generate` (PyTorch eager mode, no compile) twice, with
its "eager" attention and with its default "sdpa" attention, on the checkpoint the bundle came
from. Encoders: sentences/s over a fixed set, batch 32, against sentence-transformers' encode.

Each engine runs in a child process of its own, so its peak memory is its own and neither warms
the other's caches. Both use the same thread count. Results are medians over --repeats runs.
This is a benchmark, not a test: it prints a table (and, with --markdown, rewrites this
bundle's section of a Markdown file); it asserts nothing.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

PROMPT = "Write a short story about a robot who learns to paint."
SENTENCES = [
    "A man is eating food.", "The new movie is awesome, I loved every minute of it!",
    "Edge boxes run small language models without a GPU.", "The cat sleeps on the sofa all afternoon.",
    "Paris is the capital and largest city of France, on the river Seine.",
    "Quantized models trade a little accuracy for a lot of speed.", "ok",
    "How do I reset my password if I no longer have access to my email account?",
] * 32  # 256 sentences


# -- the engines, each run in a child process (`--engine NAME`) --------------------------------
def _edgelm_decoder(bundle: Path, source: Path | None, tokens: int, repeats: int, threads: int) -> dict:
    from edgelm.quantize.speed import timed_decode
    from edgelm.runtime import load

    lm = load(bundle, provider="cpu", threads=threads)
    ids = lm.encode(PROMPT, chat=bool(lm.manifest.chat_template_file))
    timed_decode(lm, ids, tokens)  # warm up
    firsts, rates, generated = zip(*(timed_decode(lm, ids, tokens) for _ in range(repeats)))
    return {"prompt_tokens": len(ids), "first_token_s": statistics.median(firsts), "decode_tok_s": statistics.median(rates),
            "text": lm.tokenizer.decode(generated[-1])}


def _transformers_decoder(bundle: Path, source: Path | None, tokens: int, repeats: int, threads: int,
                          attention: str = "sdpa") -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.set_num_threads(threads)
    folder, gguf = (source.parent, {"gguf_file": source.name}) if source.suffix == ".gguf" else (source, {})
    tokenizer = AutoTokenizer.from_pretrained(folder, **gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attention, **gguf).eval()
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_dict=False)
    else:
        ids = tokenizer(PROMPT)["input_ids"]
    ids = torch.tensor([ids])

    def timed(n: int) -> float:
        config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        return time.perf_counter() - start

    timed(4)  # warm up
    firsts, rates = [], []
    for _ in range(repeats):
        first, full = timed(1), timed(tokens)
        firsts.append(first)
        rates.append((tokens - 1) / (full - first))
    return {"prompt_tokens": ids.shape[1], "first_token_s": statistics.median(firsts), "decode_tok_s": statistics.median(rates)}


def _edgelm_encoder(bundle: Path, source: Path | None, tokens: int, repeats: int, threads: int) -> dict:
    from edgelm.runtime import load

    enc = load(bundle, provider="cpu", threads=threads)
    enc.embed(SENTENCES[:32])
    return {"sentences_s": _median_rate(lambda: enc.embed(SENTENCES, batch_size=32), repeats)}


def _sentence_transformers_encoder(bundle: Path, source: Path | None, tokens: int, repeats: int, threads: int) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(source), device="cpu")
    model.encode(SENTENCES[:32])
    return {"sentences_s": _median_rate(lambda: model.encode(SENTENCES, batch_size=32), repeats)}


def _median_rate(run, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(len(SENTENCES) / (time.perf_counter() - start))
    return statistics.median(rates)


ENGINES = {
    "edgelm-decoder": _edgelm_decoder,
    "transformers-eager-decoder": lambda *a: _transformers_decoder(*a, attention="eager"),
    "transformers-sdpa-decoder": lambda *a: _transformers_decoder(*a, attention="sdpa"),
    "edgelm-encoder": _edgelm_encoder, "sentence-transformers-encoder": _sentence_transformers_encoder,
}


def run_engine(engine: str, bundle: Path, source: Path | None, tokens: int, repeats: int, threads: int) -> dict:
    """Run ENGINE in a child process; returns its measurements plus its peak RSS."""
    cmd = [sys.executable, __file__, str(bundle), "--engine", engine, "--tokens", str(tokens),
           "--repeats", str(repeats), "--threads", str(threads)] + (["--source", str(source)] if source else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise click.ClickException(f"{engine} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the table ---------------------------------------------------------------------------------
def machine() -> str:
    from peers.report import machine as cpu  # scripts/peers, beside this file: the CPU model and flags

    import onnxruntime

    return f"{cpu()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def decoder_rows(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    eager, sdpa = results["transformers (eager attention)"], results["transformers (sdpa attention)"]
    header = ["engine", "prompt tokens", "time to first token", "decode tokens/s", "vs transformers eager",
              "vs transformers sdpa", "peak RSS"]
    rows = [[name, str(r["prompt_tokens"]), f"{r['first_token_s'] * 1000:.0f} ms", f"{r['decode_tok_s']:.1f}",
             f"{r['decode_tok_s'] / eager['decode_tok_s']:.2f}x", f"{r['decode_tok_s'] / sdpa['decode_tok_s']:.2f}x",
             f"{r['peak_rss_mb']:.0f} MB"] for name, r in results.items()]
    return header, rows


def encoder_rows(results: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    base = results["sentence-transformers"]
    header = ["engine", "sentences/s", "vs sentence-transformers", "peak RSS"]
    rows = [[name, f"{r['sentences_s']:.0f}", f"{r['sentences_s'] / base['sentences_s']:.2f}x", f"{r['peak_rss_mb']:.0f} MB"]
            for name, r in results.items()]
    return header, rows


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(*header, title=title)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def write_markdown(path: Path, key: str, title: str, header: list[str], rows: list[list[str]], notes: list[str]) -> None:
    """Replace (or append) the section between this key's markers in PATH."""
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    lines = [begin, f"### {title}", "", *notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows] + [end]
    text = path.read_text() if path.exists() else "# Benchmarks\n\nMeasured, not promised: each table says how it was made.\n"
    if begin in text:
        text = text[:text.index(begin)] + "\n".join(lines) + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", type=click.Path(exists=True, path_type=Path), default=None,
              help="The checkpoint transformers loads [default: the bundle manifest's source path].")
@click.option("--tokens", type=click.IntRange(min=2), default=64, show_default=True, help="Greedy tokens per decoder run.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=os.cpu_count(), show_default=True)
@click.option("--markdown", type=click.Path(path_type=Path), default=None, help="Also write the table into this Markdown file.")
@click.option("--engine", type=click.Choice(sorted(ENGINES)), default=None, hidden=True)
def main(bundle: Path, source: Path | None, tokens: int, repeats: int, threads: int, markdown: Path | None, engine: str | None):
    manifest = json.loads((bundle / "manifest.json").read_text())
    source = source or Path(manifest["source"]["path"])
    if engine:  # child process: measure one engine, print one JSON line
        result = ENGINES[engine](bundle, source, tokens, repeats, threads)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    decoder = manifest["task"] == "text-generation"
    engines = {"edgelm": "edgelm-decoder", "transformers (eager attention)": "transformers-eager-decoder",
               "transformers (sdpa attention)": "transformers-sdpa-decoder"} if decoder else \
              {"edgelm": "edgelm-encoder", "sentence-transformers": "sentence-transformers-encoder"}
    results = {}
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"benchmark {bundle.name}", total=len(engines))
        for name, child in engines.items():
            progress.update(task, description=f"benchmark {bundle.name}: {name}")
            results[name] = run_engine(child, bundle, source, tokens, repeats, threads)
            progress.advance(task)
    header, rows = (decoder_rows if decoder else encoder_rows)(results)
    precision = manifest.get("precision", {}).get("method") or "fp32"
    what = (f"{tokens} greedy tokens after a {results['edgelm']['prompt_tokens']}-token chat prompt" if decoder
            else f"{len(SENTENCES)} sentences, batch 32")
    title = f"{bundle.name} ({manifest['source'].get('architecture')}, {precision}): {what}"
    print_table(title, header, rows)
    if markdown:
        notes = [f"Machine: {machine()}; {threads} threads for both engines; median of {repeats} runs after a warm-up.",
                 f"Command: `python scripts/bench_runtime.py {bundle} --tokens {tokens} --repeats {repeats} --threads {threads}`."]
        write_markdown(markdown, f"{bundle.name}-{precision}", title, header, rows, notes)


if __name__ == "__main__":
    main()
