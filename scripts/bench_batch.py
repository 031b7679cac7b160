"""Rows per second of `edgelm batch` embedding a corpus: local mode, Ray mode, and sentence-transformers.

    python scripts/bench_batch.py --bundle out/minilm-int8 --write-docs
    python scripts/bench_batch.py --rows 20000            # a quicker look

MiniLM INT8 (built from --checkpoint into --work with `edgelm export` and `edgelm quantize` when
--bundle is not given) embeds --rows short texts (3-16 words drawn with a fixed seed from the words
of scripts/heldout_sentences.txt), read from a parquet file. Each engine runs in a process of its
own, one after the other:

  local        edgelm.batch.run(bundle, texts.parquet, out.parquet): one process, its default workers
               (one per CPU, one thread each)
  local-1      the same with workers=1: one copy of the bundle on all the CPUs' threads
  st           sentence-transformers' encode(texts, batch_size=32) on the float checkpoint, CPU, torch's threads
  ray-1, ray-2 edgelm.batch.run(..., ray="auto", workers=N) on a local Ray cluster of all the CPUs

edgelm's times are end to end: loading the bundle (every actor's, in Ray mode), reading the
input, the parts, the merge and writing OUTPUT. Ray's own start (ray.init) is not counted: a
cluster is up before a job is sent to it. sentence-transformers' time is its encode call alone.
It prints a table (and with --write-docs puts it into docs/benchmarks.md); it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ROOT / "scripts" / "heldout_sentences.txt"
ENGINES = ("local", "local-1", "st", "ray-1", "ray-2")
BATCH = 32


def short_texts(n: int, seed: int = 0) -> list[str]:
    words = sorted({w.strip('.,;:?!"()\'').lower() for line in HELD_OUT.read_text(encoding="utf-8").splitlines()
                    for w in line.split()} - {""})
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 16))) for _ in range(n)]


# -- one engine (a child process) --------------------------------------------------------------------
def measure(engine: str, bundle: Path, checkpoint: Path, work: Path) -> dict:
    texts_file = work / "texts.parquet"
    if engine == "st":
        import pyarrow.parquet as pq
        import torch
        from sentence_transformers import SentenceTransformer

        texts = pq.read_table(texts_file).column("text").to_pylist()
        model = SentenceTransformer(str(checkpoint), device="cpu")
        model.encode(texts[:64], batch_size=BATCH)  # warm up
        start = time.perf_counter()
        model.encode(texts, batch_size=BATCH)
        return {"seconds": time.perf_counter() - start, "rows": len(texts), "where": f"torch, {torch.get_num_threads()} threads"}
    from edgelm.batch import run

    out = work / f"out-{engine}.parquet"
    if engine.startswith("local"):
        workers = int(engine.split("-")[1]) if "-" in engine else None  # None: the default, one per CPU
        summary = run(bundle, texts_file, out, force=True, batch_size=BATCH, workers=workers, progress=False)
    else:
        import logging

        import ray

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        summary = run(bundle, texts_file, out, force=True, batch_size=BATCH, ray="auto",
                      workers=int(engine.split("-")[1]), progress=False)
        ray.shutdown()
    return {"seconds": summary.seconds, "rows": summary.rows, "where": summary.where}


# -- the parent -----------------------------------------------------------------------------------------
def machine() -> str:
    from peers.report import machine as cpu  # scripts/peers, beside this file: the CPU model and flags

    import onnxruntime

    return f"{cpu()}; Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"


def build_bundle(checkpoint: Path, work: Path) -> Path:
    edgelm = [sys.executable, "-m", "edgelm.cli"]
    float_bundle, int8 = work / "minilm", work / "minilm-int8"
    if not (float_bundle / "manifest.json").exists():
        subprocess.run([*edgelm, "export", str(checkpoint), str(float_bundle), "--task", "feature-extraction", "--force"], check=True)
    if not (int8 / "manifest.json").exists():
        subprocess.run([*edgelm, "quantize", str(float_bundle), str(int8), "--force"], check=True)
    return int8


def table(results: dict[str, dict], rows: int) -> tuple[list[str], list[list[str]]]:
    rate = {k: v["rows"] / v["seconds"] for k, v in results.items()}
    header = ["engine", "runs as", "seconds", "rows/s", "vs sentence-transformers", "vs edgelm local"]
    names = {"local": "edgelm batch, local mode (default workers)", "local-1": "edgelm batch, local mode, --workers 1",
             "st": "sentence-transformers encode (float)",
             "ray-1": "edgelm batch --ray, 1 actor", "ray-2": "edgelm batch --ray, 2 actors"}
    body = [[names[k], v["where"], f"{v['seconds']:.1f}", f"{rate[k]:,.0f}",
             f"{rate[k] / rate['st']:.2f}x" if "st" in rate else "-",
             f"{rate[k] / rate['local']:.2f}x" if "local" in rate else "-"] for k, v in results.items()]
    return header, body


def write_docs(path: Path, title: str, notes: list[str], header: list[str], body: list[list[str]]) -> None:
    """Replace (or append) the <!-- bench:batch --> section of PATH."""
    begin, end = "<!-- bench:batch -->", "<!-- /bench:batch -->"
    lines = [begin, f"### {title}", "", *notes, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body] + [end]
    text = path.read_text()
    if begin in text:
        text = text[:text.index(begin)] + "\n".join(lines) + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## Batch inference (issue 12)\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None, help="a MiniLM INT8 bundle [default: built into --work]")
    p.add_argument("--checkpoint", type=Path, default=ROOT / ".models" / "all-MiniLM-L6-v2")
    p.add_argument("--work", type=Path, default=ROOT / "out" / "bench-batch")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {', '.join(ENGINES)}")
    p.add_argument("--write-docs", nargs="?", const=str(ROOT / "docs" / "benchmarks.md"), metavar="MD",
                   help="put the table into MD's <!-- bench:batch --> section [docs/benchmarks.md]")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.bundle, args.checkpoint, args.work)))
        return

    import pyarrow as pa
    import pyarrow.parquet as pq

    args.work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or build_bundle(args.checkpoint, args.work)
    pq.write_table(pa.table({"id": range(args.rows), "text": short_texts(args.rows)}), args.work / "texts.parquet")
    results = {}
    for engine in args.engines.split(","):
        print(f"{engine} ...", file=sys.stderr, flush=True)
        done = subprocess.run([sys.executable, __file__, "--child", engine, "--bundle", str(bundle), "--checkpoint",
                               str(args.checkpoint), "--work", str(args.work)], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{engine} failed:\n{done.stderr[-3000:]}")
        results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {results[engine]}", file=sys.stderr, flush=True)
    header, body = table(results, args.rows)
    title = f"MiniLM INT8 embedding of {args.rows:,} short texts, batch {BATCH}"
    notes = [f"Machine: {machine()}.",
             f"Command: `python scripts/bench_batch.py --rows {args.rows}` (one run, each engine in its own process, one after the other).",
             "edgelm: end to end (bundle load, parquet in, parts, merge, parquet out); Ray: a local cluster of every CPU, "
             "started before the clock (actor start counted); sentence-transformers: its encode call on the float checkpoint."]
    for ray_engine, local_engine in (("ray-2", "local"), ("ray-1", "local-1")):
        if ray_engine in results and local_engine in results:
            r, l = results[ray_engine], results[local_engine]
            overhead = (r["seconds"] / r["rows"]) / (l["seconds"] / l["rows"]) - 1
            notes.append(f"Ray against local mode with the same workers and threads ({r['where']} against "
                         f"{l['where']}): {overhead * 100:+.1f}% wall time.")
    print("\n".join(notes))
    print("| " + " | ".join(header) + " |")
    for row in body:
        print("| " + " | ".join(row) + " |")
    if args.write_docs:
        write_docs(Path(args.write_docs), title, notes, header, body)


if __name__ == "__main__":
    main()
