"""The main job on the embedded default models: export SmolLM2 and MiniLM to verified bundles.

    python scripts/pipeline.py --models .models --out out

Prints what each stage did. (The runtime and quantize stages extend this script.)
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from edgelm.export import export
from edgelm.export.verify import DECODER_PROMPTS
from edgelm.report import bundle_bytes, short_verification

DEFAULTS = (
    # (source inside the models folder, bundle name, task)
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2", "text-generation"),
    ("all-MiniLM-L6-v2", "minilm", "feature-extraction"),
)


@click.command()
@click.option("--models", type=click.Path(path_type=Path), default=Path(".models"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("out"), show_default=True)
def main(models: Path, out: Path):
    console = Console()
    table = Table("bundle", "task", "size", "export", "parity with transformers", title="edgelm pipeline: export")
    for src, name, task in DEFAULTS:
        start = time.perf_counter()
        manifest = export(models / src, out / name, task, force=True)
        seconds = time.perf_counter() - start
        table.add_row(str(out / name), task, f"{bundle_bytes(manifest) / 1e6:.0f} MB", f"{seconds:.0f} s", short_verification(manifest.verification))
        if manifest.verification.get("greedy_text"):
            console.print(f"SmolLM2 greedy answer to {DECODER_PROMPTS[0]!r}: {manifest.verification['greedy_text']!r}")
    console.print(table)


if __name__ == "__main__":
    main()
