"""Sentence embeddings on this CPU: edgelm float and INT8 against CTranslate2, speed and cosine, in one run.

    python scripts/bench_encoders.py .models/all-MiniLM-L6-v2 --ct2-python /path/to/ct2-venv/bin/python
    python scripts/bench_encoders.py .models/all-MiniLM-L6-v2 --bundle mine=out/minilm-mine --markdown docs/benchmarks.md

Engines, each in a process of its own (its own imports and memory):
  sentence-transformers float   (this Python; the float reference every cosine is taken against)
  edgelm float, edgelm INT8 with the old encoder default (int8-dynamic) and with the new one,
  and any --bundle NAME=PATH    (edgelm.runtime, this Python)
  CTranslate2 float32 and int8  (only with --ct2-python: that Python runs ctranslate2.Encoder,
                                 mean-pools and normalises by hand, as sentence-transformers does;
                                 CTranslate2 converts BERT-family checkpoints, not MPNet)
  sentence-transformers ONNX    (only with --st-onnx-python: its backend="onnx", optimum's export run by
                                 onnxruntime; optimum pins transformers < 4.58, hence a Python of its own)

Bundles and CTranslate2 models are built into --work on first use (edgelm export / quantize,
ct2-transformers-converter beside --ct2-python) and reused after. Accuracy: cosine against
sentence-transformers on the quantize gate's 64 sentences and on 96 held-out sentences
(scripts/heldout_sentences.txt, other registers and lengths, never used to choose a method).
Speed: sentences/s over 256 sentences (both sets, cycled) in batches of 32 on --threads
threads; every engine is timed once per round, round after round, so all of them share the
machine's load alike, and the median round counts. Beside it, sentences per CPU-second of the
engine's process: on a machine shared with other work this moves less than the wall clock (with
one thread it is the engine's own cost; with more it also counts threads spinning while they
wait). It prints a table; it asserts nothing.

This file runs in two roles: the parent (this Python) and a worker (`--worker KIND PATH`), which
may run under --ct2-python, so the top level imports only the standard library and numpy.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parent
HELD_OUT = SCRIPTS / "heldout_sentences.txt"
SPEED_TEXTS = 256
BATCH = 32


# -- workers: one engine each, driven over stdin/stdout --------------------------------------------
def _edgelm(path: str, threads: int):
    from edgelm.runtime import load

    enc = load(path, provider="cpu", threads=threads)
    return lambda texts: enc.embed(texts, batch_size=BATCH)


def _sentence_transformers(path: str, threads: int):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(path, device="cpu")
    return lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True)


def _sentence_transformers_onnx(path: str, threads: int):
    """sentence-transformers' ONNX backend (optimum's export and onnxruntime; optimum needs transformers < 4.58,
    so this runs under --st-onnx-python, a Python of its own)."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = SentenceTransformer(path, device="cpu", backend="onnx",
                                model_kwargs={"provider": "CPUExecutionProvider", "session_options": options})
    return lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True)


def _ctranslate2(path: str, threads: int, compute_type: str):
    import ctranslate2
    from tokenizers import Tokenizer

    info = json.loads((Path(path) / "edgelm-source.json").read_text())
    tokenizer = Tokenizer.from_file(str(Path(info["checkpoint"]) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(info["max_length"])
    encoder = ctranslate2.Encoder(path, device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1)

    def embed(texts):  # length-sorted batches, mean pooling over real tokens, L2 normalisation
        ids = [e.ids for e in tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        vectors = [None] * len(ids)
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            hidden = np.asarray(encoder.forward_batch([ids[i] for i in chunk]).last_hidden_state)  # (batch, seq, dim)
            lengths = np.array([len(ids[i]) for i in chunk])
            mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)  # (batch, seq)
            pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None]
            for row, i in zip(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), chunk):
                vectors[i] = row
        return np.stack(vectors)

    return embed


WORKERS = {"edgelm": _edgelm, "sentence-transformers": _sentence_transformers, "st-onnx": _sentence_transformers_onnx,
           "ct2-float32": lambda p, t: _ctranslate2(p, t, "float32"), "ct2-int8": lambda p, t: _ctranslate2(p, t, "int8")}


def worker(kind: str, path: str, threads: int, texts_file: str, out_dir: str) -> None:
    """Load, write the embeddings of every text set, then time one pass over the speed set per 'time' line."""
    sets = json.loads(Path(texts_file).read_text())
    embed = WORKERS[kind](path, threads)
    embed(sets["speed"][:BATCH])  # warm up
    for name in ("gate", "held_out"):
        np.save(Path(out_dir) / f"{name}.npy", np.asarray(embed(sets[name]), dtype=np.float32))
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "time":
            break
        start, cpu = time.perf_counter(), time.process_time()
        embed(sets["speed"])
        print(time.perf_counter() - start, time.process_time() - cpu, flush=True)


# -- the parent --------------------------------------------------------------------------------------
def machine(threads: int) -> str:
    from peers.report import machine as cpu  # scripts/peers, beside this file: the CPU model and flags

    import onnxruntime

    return (f"{cpu()}; {threads} threads per engine; "
            f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}")


def text_sets() -> dict[str, list[str]]:
    from edgelm.quantize.texts import SENTENCES

    gate = list(SENTENCES)
    held_out = [l.strip() for l in HELD_OUT.read_text(encoding="utf-8").splitlines() if l.strip()]
    return {"gate": gate, "held_out": held_out, "speed": list(itertools.islice(itertools.cycle(gate + held_out), SPEED_TEXTS))}


def build_bundles(checkpoint: Path, work: Path) -> dict[str, tuple[str, Path]]:
    """edgelm's float bundle and its INT8 bundles (old and new encoder default), built once into WORK."""
    from edgelm.export import export
    from edgelm.quantize import Method, QuantizeOptions, default_method, quantize

    float_bundle = work / "edgelm-float"
    if not float_bundle.exists():
        export(checkpoint, float_bundle, task="feature-extraction", progress=False)
    bundles = {"edgelm float": ("fp32", float_bundle)}
    methods = {"old default": Method.INT8_DYNAMIC, "new default": default_method(False)}
    for label, method in methods.items():
        if label == "new default" and method is Method.INT8_DYNAMIC:
            break  # the same bundle
        out = work / f"edgelm-{method.value}"
        if not out.exists():
            quantize(float_bundle, out, QuantizeOptions(method, gate=False), progress=False)
        bundles[f"edgelm INT8 ({label})"] = (method.value, out)
    return bundles


def build_ct2(checkpoint: Path, work: Path, ct2_python: Path) -> dict[str, tuple[str, Path]]:
    converter = ct2_python.parent / "ct2-transformers-converter"
    max_length = json.loads((checkpoint / "sentence_bert_config.json").read_text()).get("max_seq_length", 512) \
        if (checkpoint / "sentence_bert_config.json").exists() else 512
    models = {}
    for quantization in ("float32", "int8"):
        out = work / f"ct2-{quantization}"
        if not out.exists():
            subprocess.run([str(converter), "--model", str(checkpoint), "--output_dir", str(out), "--quantization", quantization],
                           check=True, capture_output=True, text=True)
        (out / "edgelm-source.json").write_text(json.dumps({"checkpoint": str(checkpoint.absolute()), "max_length": max_length}))
        models[f"CTranslate2 {quantization}"] = (quantization, out)
    return models


class Worker:
    """One engine in a child process."""

    def __init__(self, python: Path, kind: str, path: Path, threads: int, texts_file: Path, out_dir: Path):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen([str(python), __file__, "--worker", kind, str(path), "--threads", str(threads),
                                         "--texts", str(texts_file), "--out", str(out_dir)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"error: the {kind} worker for {path} did not start (see its error above)")

    def time(self) -> tuple[float, float]:
        """One timed pass over the speed set: (wall seconds, CPU seconds of the worker's threads)."""
        self.process.stdin.write("time\n")
        self.process.stdin.flush()
        wall, cpu = self.process.stdout.readline().split()
        return float(wall), float(cpu)

    def embeddings(self, name: str) -> np.ndarray:
        return np.load(self.out_dir / f"{name}.npy")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in (".onnx", ".bin", ".onnx_data")) / 1e6


def main() -> None:
    import click

    @click.command(help=__doc__.split("\n\n")[0])
    @click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("out/bench-encoders"), show_default=True,
                  help="Where the bundles and CTranslate2 models are built and kept.")
    @click.option("--ct2-python", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="A Python with ctranslate2 (and tokenizers): adds CTranslate2 float32 and int8.")
    @click.option("--st-onnx-python", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="A Python with sentence-transformers and optimum-onnx: adds sentence-transformers' ONNX backend.")
    @click.option("--bundle", "extra", multiple=True, metavar="NAME=PATH", help="Another edgelm bundle to measure.")
    @click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
    @click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
    @click.option("--markdown", type=click.Path(path_type=Path), default=None, help="Also write the table into this Markdown file.")
    def cli(checkpoint, work, ct2_python, st_onnx_python, extra, repeats, threads, markdown):
        from rich.console import Console
        from rich.progress import Progress

        from bench_runtime import print_table, write_markdown  # scripts/ is on sys.path when run as a script

        work.mkdir(parents=True, exist_ok=True)
        engines = {"sentence-transformers float": (sys.executable, "sentence-transformers", "fp32", checkpoint)}
        engines.update({name: (sys.executable, "edgelm", method, path) for name, (method, path) in build_bundles(checkpoint, work).items()})
        for item in extra:
            name, _, path = item.partition("=")
            method = json.loads((Path(path) / "manifest.json").read_text())["precision"].get("method") or "fp32"
            engines[name] = (sys.executable, "edgelm", method, Path(path))
        if st_onnx_python:
            engines["sentence-transformers ONNX"] = (st_onnx_python, "st-onnx", "fp32", checkpoint)
        if ct2_python:
            engines.update({name: (ct2_python, f"ct2-{q}", q, path) for name, (q, path) in build_ct2(checkpoint, work, ct2_python).items()})
        with tempfile.TemporaryDirectory() as tmp, Progress(console=Console(stderr=True), transient=True) as progress:
            texts_file = Path(tmp) / "texts.json"
            sets = text_sets()
            texts_file.write_text(json.dumps(sets))
            task = progress.add_task("start engines", total=len(engines) + repeats * len(engines))
            workers = {}
            for i, (name, (python, kind, _, path)) in enumerate(engines.items()):
                progress.update(task, description=f"start {name}")
                workers[name] = Worker(python, kind, path, threads, texts_file, Path(tmp) / str(i))
                progress.advance(task)
            times = {name: [] for name in workers}
            for round_ in range(repeats):
                for name, w in workers.items():
                    progress.update(task, description=f"round {round_ + 1}/{repeats}: {name}")
                    times[name].append(w.time())
                    progress.advance(task)
            reference = workers["sentence-transformers float"]
            n = len(sets["speed"])
            speed = {name: n / statistics.median(wall for wall, _ in t) for name, t in times.items()}
            per_cpu = {name: n / statistics.median(cpu for _, cpu in t) for name, t in times.items()}
            base, ct2_int8, rows = speed["edgelm float"], speed.get("CTranslate2 int8"), []
            for name, (_, _, method, path) in engines.items():
                cells = [name, method, f"{size_mb(path):.1f} MB" if "sentence-transformers" not in name else "-", f"{speed[name]:.0f}",
                         f"{speed[name] / base:.2f}x"] + ([f"{speed[name] / ct2_int8:.2f}x"] if ct2_int8 else []) + \
                        [f"{per_cpu[name]:.0f}"]
                for set_name in ("gate", "held_out"):
                    c = cosines(reference.embeddings(set_name), workers[name].embeddings(set_name))
                    cells.append(f"{c.mean():.4f} / {c.min():.4f}")
                rows.append(cells)
            for w in workers.values():
                w.close()
        header = ["engine", "precision", "size", "sentences/s", "vs edgelm float"] + (["vs CT2 int8"] if ct2_int8 else []) + \
                 ["sentences per CPU-second", f"cosine mean / min, gate ({len(sets['gate'])})", f"cosine mean / min, held-out ({len(sets['held_out'])})"]
        title = (f"{checkpoint.name}: {len(sets['speed'])} sentences, batch {BATCH}, {threads} thread{'s' if threads > 1 else ''} per engine, "
                 f"median of {repeats} interleaved rounds")
        print(f"Machine: {machine(threads)}")
        print_table(title, header, rows)
        if markdown:
            notes = [f"Machine: {machine(threads)}. Cosine against sentence-transformers (float).",
                     f"Command: `python scripts/bench_encoders.py {checkpoint} --repeats {repeats} --threads {threads}"
                     f"{' --ct2-python PY' if ct2_python else ''}{' --st-onnx-python PY' if st_onnx_python else ''}"
                     f"{''.join(f' --bundle {b}' for b in extra)}`."]
            write_markdown(markdown, f"encoders-{checkpoint.name}-{threads}-threads", title, header, rows, notes)

    cli()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":  # --worker KIND PATH --threads N --texts FILE --out DIR
        args = dict(zip(sys.argv[4::2], sys.argv[5::2]))
        worker(sys.argv[2], sys.argv[3], int(args["--threads"]), args["--texts"], args["--out"])
    else:
        main()
