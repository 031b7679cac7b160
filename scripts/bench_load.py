"""What opening a bundle costs: seconds and resident memory, weights beside the graph against inline.

    python scripts/bench_load.py BUNDLE [BUNDLE ...] [--repeats 3] [--threads 2]

Bundles keep their weights in model.onnx_data beside model.onnx, which onnxruntime maps into
memory; a graph with the weights inside model.onnx is first parsed into a copy of them. For each
bundle this writes the same graph with its weights inline into a temporary folder and opens both
the way the runtime does (`edgelm.runtime.session.open_session`, CPU), each open in a child
process of its own, the two layouts alternating. It prints the median load time, the resident
memory right after the open and the process's peak, and the ratios. A benchmark: it asserts
nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from peers.report import machine  # noqa: E402  (scripts/peers, beside this file: the CPU model and flags)

CHILD = """
import json, sys, time
from pathlib import Path
from edgelm.runtime.session import open_session
started = time.perf_counter()
session = open_session(Path(sys.argv[1]), "cpu", int(sys.argv[2]))
seconds = time.perf_counter() - started
status = dict(line.split(":", 1) for line in open("/proc/self/status"))  # VmHWM: this program's own peak (ru_maxrss
kb = lambda key: int(status[key].split()[0]) / 1000                       # would carry the parent's over exec)
print(json.dumps({"seconds": seconds, "resident_mb": kb("VmRSS"), "peak_mb": kb("VmHWM")}))
"""


def open_once(graph: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(graph), str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def inline_copy(graph: Path, folder: Path) -> Path:
    """GRAPH with every weight inside the one file, as bundles were written before model.onnx_data."""
    import onnx

    path = folder / graph.name
    onnx.save(onnx.load(str(graph)), str(path))
    return path


@click.command()
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repeats", default=3, show_default=True, help="Opens per layout (medians are shown).")
@click.option("--threads", default=2, show_default=True)
def main(bundles: tuple[Path, ...], repeats: int, threads: int) -> None:
    from edgelm.runtime.manifest import read_manifest

    table = Table(title=f"Opening a bundle (CPU provider, {threads} threads, median of {repeats} processes)")
    for header in ("bundle", "graph + weights", "weights", "load s", "resident after open", "peak", "resident vs inline"):
        table.add_column(header)
    with tempfile.TemporaryDirectory() as work, Progress(transient=True) as progress:
        task = progress.add_task("opening bundles", total=len(bundles) * repeats * 2)
        for bundle in bundles:
            manifest = read_manifest(bundle)
            graph = bundle / manifest.graph_file
            if not manifest.external_data:
                raise SystemExit(f"error: {bundle} keeps its weights inside {graph.name}; re-export or re-quantize it")
            folder = Path(work) / bundle.name
            folder.mkdir()
            layouts = {"beside": graph, "inline": inline_copy(graph, folder)}
            runs: dict[str, list[dict]] = {name: [] for name in layouts}
            for _ in range(repeats):
                for name, path in layouts.items():
                    runs[name].append(open_once(path, threads))
                    progress.advance(task)
            size = sum(f["bytes"] for n, f in manifest.files.items() if n == manifest.graph_file or n in manifest.external_data)
            med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
            inline = med["inline"]
            for name, m in med.items():
                table.add_row(bundle.name, f"{size / 1e6:.0f} MB", name, f"{m['seconds']:.2f}", f"{m['resident_mb']:.0f} MB",
                              f"{m['peak_mb']:.0f} MB", f"{m['resident_mb'] / inline['resident_mb']:.2f}x")
    console = Console(width=140)
    console.print(f"Machine: {machine()}")
    console.print(table)


if __name__ == "__main__":
    main()
