"""The main job on the embedded default models: export, quantize to INT8, run, compare.

    python scripts/pipeline.py --models .models --out out

export writes verified float bundles (out/smollm2, out/minilm); quantize writes INT8 bundles
that passed the accuracy gate (out/smollm2-int8, out/minilm-int8); the runtime (numpy +
onnxruntime + tokenizers, no torch) then generates a chat reply with SmolLM2 INT8, streamed
as it comes, and embeds a few sentences with MiniLM INT8. Ends with one table comparing float
and INT8: size, accuracy against the float bundle, and speed on this machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from edgelm.export import export
from edgelm.quantize import QuantizeOptions, default_method, quantize
from edgelm.report import accuracy_cells, bundle_bytes, short_verification, speed_cells

DEFAULTS = (
    # (source inside the models folder, bundle name, task)
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2", "text-generation"),
    ("all-MiniLM-L6-v2", "minilm", "feature-extraction"),
)
CHAT_PROMPT = "Explain in two sentences why the sky is blue."
SENTENCES = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Stock markets fell sharply today.",
             "Edge boxes run language models without a GPU."]


@click.command()
@click.option("--models", type=click.Path(path_type=Path), default=Path(".models"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True)
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
def main(models: Path, out: Path, provider: str):
    console = Console(soft_wrap=True)
    table = Table("bundle", "task", "size", "export", "parity with transformers", title="edgelm pipeline: export")
    floats = {}
    for src, name, task in DEFAULTS:
        start = time.perf_counter()
        floats[name] = export(models / src, out / name, task, force=True)
        table.add_row(str(out / name), task, f"{bundle_bytes(floats[name]) / 1e6:.0f} MB", f"{time.perf_counter() - start:.0f} s",
                      short_verification(floats[name].verification))
    console.print(table)
    quantized = {}
    for name, manifest in floats.items():
        options = QuantizeOptions(default_method(manifest.is_decoder))
        quantized[name] = quantize(out / name, out / f"{name}-int8", options, force=True)
    run_bundles(console, out / "smollm2-int8", out / "minilm-int8", provider)
    console.print(summary_table(floats, quantized))


def summary_table(floats: dict, quantized: dict) -> Table:
    """Float against INT8 for each model: size, accuracy (the gate's numbers) and speed here."""
    table = Table("model", "INT8 method", "size float -> INT8", "accuracy of INT8 against float", "speed float -> INT8",
                  "gate", title="edgelm pipeline: float vs INT8")
    for name, manifest in quantized.items():
        before, after = bundle_bytes(floats[name]), bundle_bytes(manifest)
        speed_before, speed_after, ratio = speed_cells(manifest.accuracy)
        table.add_row(name, manifest.precision["method"], f"{before / 1e6:.0f} -> {after / 1e6:.0f} MB ({after / before:.0%})",
                      accuracy_cells(manifest.accuracy), f"{speed_before} -> {speed_after} ({ratio})",
                      "passed" if manifest.accuracy["passed"] else "FAILED")
    return table


def run_bundles(console: Console, decoder: Path, encoder: Path, provider: str) -> None:
    """Generate and embed through edgelm.runtime, printing the output and the speed."""
    from edgelm.runtime import load

    lm = load(decoder, provider=provider)
    console.print(f"\n[bold]{decoder.name}[/] on {lm.provider}, chat prompt {CHAT_PROMPT!r}:")
    pieces = []
    for piece in lm.stream(CHAT_PROMPT, chat=True, max_new_tokens=64):
        pieces.append(piece)
        console.print(piece, end="", markup=False, highlight=False)
    console.print()
    done = lm.complete([CHAT_PROMPT], chat=True, max_new_tokens=64)[0]  # the same greedy reply, timed
    assert done.text == "".join(pieces)
    console.print(f"  {len(done.token_ids)} tokens ({done.finish_reason}), first after {done.first_token_seconds * 1000:.0f} ms, "
                  f"decode {done.decode_tokens_per_second:.1f} tokens/s")

    enc = load(encoder, provider=provider)
    enc.embed(SENTENCES)  # warm up
    start = time.perf_counter()
    vectors = enc.embed(SENTENCES * 16)[: len(SENTENCES)]
    rate = len(SENTENCES) * 16 / (time.perf_counter() - start)
    console.print(f"\n[bold]{encoder.name}[/] on {enc.provider}: {vectors.shape[1]}-d vectors, {rate:.0f} sentences/s; cosine similarities:")
    sims = vectors @ vectors.T  # the vectors are L2-normalised in the graph
    for i, text in enumerate(SENTENCES):
        best = int(np.argsort(-sims[i])[1])
        console.print(f"  {text!r:52} closest: {SENTENCES[best]!r} ({sims[i, best]:.3f})", markup=False, highlight=False)


if __name__ == "__main__":
    main()
