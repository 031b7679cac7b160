"""The `edgelm` command line. Each command imports its stage only when it runs.

Errors edgelm raises on purpose print as one line (`error: ...`) with exit code 1.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from edgelm.errors import EdgelmError
from edgelm.runtime.manifest import TASKS


def one_line_errors(fn):
    """Turn an EdgelmError into `error: ...` on stderr and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgelmError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgelm")
def cli():
    """Ship transformer language models to edge boxes as verified ONNX bundles."""


@cli.command("export")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--task", type=click.Choice(TASKS), default=None, help="Default: what the checkpoint's head serves.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: optimum's choice for the model).")
@one_line_errors
def export_cmd(src: Path, out: Path, task: str | None, force: bool, opset: int | None):
    """Export a checkpoint folder or .gguf file to a verified bundle."""
    from edgelm.export import export

    manifest = export(src, out, task, force=force, opset=opset)
    from edgelm.report import print_export_summary

    print_export_summary(out, manifest)


@cli.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--fast", is_flag=True, help="Check sizes of large files but skip hashing them.")
@click.option("--json", "as_json", is_flag=True, help="Print manifest.json as it is.")
@one_line_errors
def inspect_cmd(bundle: Path, fast: bool, as_json: bool):
    """Show a bundle's manifest, I/O, KV layout and checks, and verify its files."""
    from edgelm.report import print_inspection

    print_inspection(bundle, fast=fast, as_json=as_json)


def main():
    cli(prog_name="edgelm")


if __name__ == "__main__":
    main()
