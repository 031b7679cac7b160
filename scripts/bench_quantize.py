"""Benchmark quantized bundles against their float bundle, in the same run, on this machine.

    python scripts/bench_quantize.py out/smollm2 out/smollm2-int8 out/smollm2-int4 --markdown docs/benchmarks.md
    python scripts/bench_quantize.py out/minilm out/minilm-int8

The first bundle is the float one. For each bundle: size (from its manifest), accuracy against
the float bundle (the numbers its quantize gate recorded: perplexity and top-1 agreement for
decoders, embedding cosine or label agreement for encoders), and speed measured here by
scripts/bench_runtime.py's engines, each in a child process (decode tokens/s over 64 greedy
tokens, or sentences/s over 256 sentences), as ratios to the float bundle. It prints a table
and, with --markdown, rewrites this comparison's section of a Markdown file. It asserts nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress

from bench_runtime import machine, print_table, run_engine, write_markdown  # scripts/ is on sys.path when run as a script
from edgelm.report import accuracy_cells


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def size_bytes(manifest: dict) -> int:
    return sum(meta["bytes"] for meta in manifest["files"].values())


def accuracy_cell(manifest: dict) -> str:
    return accuracy_cells(manifest["accuracy"]) if manifest.get("accuracy") else "reference"


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tokens", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--markdown", type=click.Path(path_type=Path), default=None)
def main(bundles: tuple[Path, ...], tokens: int, repeats: int, threads: int, markdown: Path | None):
    manifests = [manifest_of(b) for b in bundles]
    decoder = manifests[0]["task"] == "text-generation"
    engine, key, unit = ("edgelm-decoder", "decode_tok_s", "decode tokens/s") if decoder else \
                        ("edgelm-encoder", "sentences_s", "sentences/s")
    speeds = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("benchmark", total=len(bundles))
        for bundle in bundles:
            progress.update(task, description=f"benchmark {bundle.name}")
            speeds.append(run_engine(engine, bundle, None, tokens, repeats, threads))
            progress.advance(task)
    header = ["bundle", "method", "size", "size vs float", "accuracy vs float (gate)", unit, "speed vs float", "peak RSS"]
    base_size, base_speed = size_bytes(manifests[0]), speeds[0][key]
    rows = [[b.name, m["precision"].get("method") or "fp32", f"{size_bytes(m) / 1e6:.1f} MB",
             f"{size_bytes(m) / base_size:.1%}", accuracy_cell(m), f"{s[key]:.1f}", f"{s[key] / base_speed:.2f}x",
             f"{s['peak_rss_mb']:.0f} MB"] for b, m, s in zip(bundles, manifests, speeds)]
    title = f"{bundles[0].name}: float against quantized ({manifests[0]['source'].get('architecture')})"
    print_table(title, header, rows)
    if markdown:
        notes = [f"Machine: {machine()}; {threads} threads; median of {repeats} runs after a warm-up; "
                 f"accuracy as recorded by each bundle's quantize gate on edgelm's default evaluation text.",
                 f"Command: `python scripts/bench_quantize.py {' '.join(map(str, bundles))} --repeats {repeats} --threads {threads}`."]
        write_markdown(markdown, f"quantize-{bundles[0].name}", title, header, rows, notes)


if __name__ == "__main__":
    main()
