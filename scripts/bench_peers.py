"""Benchmark edgelm against llama.cpp, onnxruntime-genai and CTranslate2 on one GGUF checkpoint
(SmolLM2-135M-Instruct by default; Gemma 3 270M with --model gemma3).

    python scripts/bench_peers.py --edgelm out/smollm2 out/smollm2-int8 out/smollm2-int4
    python scripts/bench_peers.py --edgelm out/smollm2-int8 --engines edgelm,llama --scenarios single,deep --repeats 1
    python scripts/bench_peers.py --edgelm ... --write-docs          # also rewrite docs/benchmarks.md's peers section
    python scripts/bench_peers.py --model gemma3 --edgelm out/gemma3 out/gemma3-int8 out/gemma3-int4 --engines edgelm,llama,genai
    python scripts/dealign_gguf.py .models/SmolLM2-135M-Instruct.Q4_1.gguf /work/peers/smollm2-dealigned.F32.gguf
    python scripts/bench_peers.py --model smollm2-dealigned --edgelm ... --engines edgelm,llama --scenarios single,suite

Peers: `bash scripts/peers/setup.sh` installs each in its own venv under /work/peers (llama-cpp-python
compiles for ~15 minutes on 2 cores; run it in the background).

Method. Every engine gets the same token ids (the edgelm bundle's tokenizer.json, no special
tokens added, cut from a fixed English text to exact lengths), the same thread count, greedy
decoding forced to full length (eos ignored), and runs in a process of its own, started with
its own Python (each peer lives in its own venv). A process opens the model, runs its scenario
once to warm up, then once timed, and prints one JSON line (scripts/peers/common.py). Every
number is the median over --repeats such processes. Scenarios:

    single      25-token prompt, 128 new tokens: decode tokens/s (after the first), time to first token
    long        500-token prompt, 16 new tokens: time to first token (prefill), decode tokens/s
    deep        1,976-token prompt, 64 new tokens: decode tokens/s, time to first token, peak RSS
    batch       8 prompts of 20-60 tokens x 64 new tokens: aggregate tokens/s (wall time incl. prefill)
    ppl         1,024 tokens of English prose, one window, teacher forcing: exp(mean NLL), and the mean
                KL divergence and top-1 agreement of every position's distribution with the engine's float variant
    suite       the same per domain of the quantize gate's evaluation suite (edgelm.quantize.eval_suite: prose,
                code, technical, legal, dialogue, German; first 1,024 tokens of each), with the worst and median
                domain, and the speed/quality frontier (decode tok/s of `single` against the worst domain's
                perplexity change) as a table and a plot (--plot; matplotlib)

Peer models are converted once into --work (GGUF quantizations of the shipped file, and that file as it is,
onnxruntime-genai's builder and CTranslate2's converter on the fp32 HF folder, which is itself
written once from the GGUF by transformers' loader when --hf-dir does not exist). An engine whose
Python or package is missing is skipped with a note. CI never runs this: it is a benchmark,
it prints tables and asserts nothing beyond each engine making the tokens it was asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import report, texts  # noqa: E402  (scripts/peers, beside this file)

RUNNERS = Path(__file__).resolve().parent / "peers"
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("single", "long", "deep", "batch", "ppl", "suite")
EDGELM_CLASSES = {"fp32": "fp32", "int8": "8-bit", "int8-dynamic": "8-bit", "int8-static": "8-bit", "int4": "4-bit",
                  "int4-mixed": "4-bit"}
LLAMA_CLASSES = {"F32": "fp32", "Q8_0": "8-bit", "Q4_0": "4-bit", "Q4_K_M": "4-bit"}  # "shipped" (the GGUF as it is): 4-bit
# --model: the checkpoint raced, its source GGUF and the fp32 HF folder the HF-based peers convert from
MODELS = {
    "smollm2": {"title": "SmolLM2-135M-Instruct", "gguf": ROOT / ".models/SmolLM2-135M-Instruct.Q4_1.gguf",
                "hf_dir": "/work/peers/smollm2-hf", "work": "/work/peers/models", "section": "peers"},
    # SmolLM2's weights off the Q4_1 grid they were shipped on, the same function (scripts/dealign_gguf.py): 4-bit
    # quality measured as on a model trained in float
    "smollm2-dealigned": {"title": "SmolLM2-135M-Instruct, de-aligned float", "gguf": "/work/peers/smollm2-dealigned.F32.gguf",
                          "hf_dir": "/work/peers/smollm2-dealigned-hf", "work": "/work/peers/models-dealigned",
                          "section": "suite-smollm2-dealigned"},
    "gemma3": {"title": "Gemma 3 270M (base, from its Q4_K_M GGUF)", "gguf": ROOT / ".models/gemma-3-270m-q4_k_m.gguf",
               "hf_dir": "/work/peers/gemma3-hf", "work": "/work/peers/gemma3-models", "section": "peers-gemma3"},
}
METRICS = ("ttft_s", "decode_tok_s", "aggregate_tok_s", "ppl", "rss_peak_mb", "total_s")
stderr = Console(stderr=True)


@dataclass(frozen=True)
class Engine:
    """A peer: its runner module, the Python that runs it, what it can do and its variants."""

    key: str
    label: str
    python: str
    module: str  # imported once to check the engine is installed
    variants: tuple[tuple[str, str], ...]  # (variant name, precision class)
    scenarios: tuple[str, ...] = SCENARIOS


@dataclass
class Variant:
    """One model an engine runs: an edgelm bundle, a GGUF file, a genai folder..."""

    engine: Engine
    name: str
    klass: str  # fp32 / 8-bit / 4-bit
    model: str | None = None  # filled by prepare()

    @property
    def size_mb(self) -> float | None:
        """Bytes on disk of the model file or folder (weights, graph, tokenizer), in MB."""
        if self.model is None or not Path(self.model).exists():
            return None
        path = Path(self.model)
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        return sum(f.stat().st_size for f in files) / 1e6

    @property
    def key(self) -> str:
        return f"{self.engine.key}:{self.name}"


@dataclass
class Outcome:
    """The runs of one (scenario, variant): their medians, or why they failed."""

    runs: list[dict] = field(default_factory=list)
    error: str | None = None

    def median(self, metric: str) -> float | None:
        values = [r[metric] for r in self.runs if metric in r]
        return statistics.median(values) if values else None


# -- engines and variants ----------------------------------------------------------------------
def engines(args) -> list[Engine]:
    """The engines asked for, each with the Python it runs under."""
    here = sys.executable
    table = [
        Engine("edgelm", "edgelm", args.edgelm_python or here, "edgelm.runtime",
               tuple((m, EDGELM_CLASSES.get(m, "8-bit")) for m in map(_edgelm_method, args.edgelm))),
        Engine("llama", "llama.cpp", args.llama_python, "llama_cpp",
               tuple((v, LLAMA_CLASSES.get(v, "4-bit")) for v in args.llama_variants)),
        Engine("genai", "onnxruntime-genai", args.genai_python, "onnxruntime_genai",
               (("fp32", "fp32"), ("int8", "8-bit"), ("int4", "4-bit"))),
        Engine("ct2", "CTranslate2", args.ct2_python, "ctranslate2", (("float32", "fp32"), ("int8", "8-bit"))),
        Engine("transformers", "transformers (eager)", args.transformers_python or here, "transformers",
               (("fp32", "fp32"),), scenarios=("single", "deep")),
    ]
    return [e for e in table if e.key in args.engines]


def _edgelm_method(bundle: str) -> str:
    """The bundle's quantization method from its manifest; fp32 for a float bundle."""
    manifest = json.loads(Path(bundle, "manifest.json").read_text())
    return (manifest.get("precision") or {}).get("method") or "fp32"


def installed(engine: Engine) -> str | None:
    """None when ENGINE's Python exists and imports its package, else why not."""
    if not Path(engine.python).exists():
        return f"{engine.python} not found"
    done = subprocess.run([engine.python, "-c", f"import {engine.module}"], capture_output=True, text=True, cwd="/tmp")
    if done.returncode != 0:
        return f"{engine.python} cannot import {engine.module}"
    return None


def variants_of(engine: Engine, args) -> list[Variant]:
    """An engine's variants; edgelm's models are the bundles given (labels made unique)."""
    found = [Variant(engine, name, klass) for name, klass in engine.variants]
    if engine.key == "edgelm":
        methods = [v.name for v in found]
        for variant, bundle in zip(found, args.edgelm):
            variant.model = str(Path(bundle).resolve())
            if methods.count(variant.name) > 1:  # two bundles of one method: tell them apart by folder
                variant.name = Path(bundle).name
    return found


# -- child processes ---------------------------------------------------------------------------
class RunFailed(Exception):
    pass


SIGILL_HINT = {"llama": "llama.cpp was built for instructions this machine refuses (AMX kernels on a VM that "
                        "does not enable AMX?): build llama-cpp-python with CMAKE_ARGS=\"-DGGML_NATIVE=OFF "
                        "-DGGML_AVX512=ON ... -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF\" in another venv and pass "
                        "it as --llama-python"}


def run_child(engine: Engine, job: dict, folder: Path, timeout: float) -> dict:
    """Run ENGINE's runner on JOB in a fresh process; returns the JSON line it printed."""
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    cmd = [engine.python, str(RUNNERS / f"{engine.key}_runner.py"), str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd="/tmp")
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"timed out after {timeout:.0f} s") from e
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == -signal.SIGILL:
        raise RunFailed(f"illegal instruction (SIGILL). {SIGILL_HINT.get(engine.key, '')}".strip())
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
        raise RunFailed(tail[:300])
    return json.loads(lines[-1])


HF_ENGINES = ("genai", "ct2", "transformers")  # convert from (or run) the fp32 HF folder


def ensure_hf_dir(variants: list[Variant], args, folder: Path, sources: dict) -> None:
    """Write --hf-dir from --gguf (transformers' GGUF loader, in the project's Python) when a peer needs it."""
    if Path(args.hf_dir, "config.json").exists() or not any(v.engine.key in HF_ENGINES for v in variants):
        return
    stderr.print(f"fp32 HF folder {args.hf_dir} from {args.gguf} (once) ...")
    maker = Engine("transformers", "transformers", args.transformers_python or sys.executable, "transformers", ())
    run_child(maker, {"action": "hf_folder", "sources": sources}, folder, timeout=1800)


def prepare(variants: list[Variant], args, folder: Path) -> list[Variant]:
    """Convert every peer model that is not yet in --work; drop (with a note) the ones that fail."""
    ready = []
    sources = {"gguf": str(Path(args.gguf).resolve()), "hf_dir": str(Path(args.hf_dir).resolve())}
    ensure_hf_dir(variants, args, folder, sources)
    for variant in variants:
        if variant.model is None:
            stderr.print(f"model for {variant.engine.label} {variant.name} (converted into {args.work} once) ...")
            job = {"action": "prepare", "variant": variant.name, "work": str(args.work), "sources": sources,
                   "threads": args.threads}
            try:
                variant.model = run_child(variant.engine, job, folder, timeout=3600)["model"]
            except RunFailed as e:
                stderr.print(f"[yellow]skipped {variant.key}: preparing failed: {e}[/]")
                continue
        ready.append(variant)
    return ready


def measure(variants: list[Variant], args, jobs: dict, folder: Path) -> dict[tuple[str, str], Outcome]:
    """Every (scenario, variant) --repeats times, repeat-major so drift spreads over all engines."""
    suite = [k for k in jobs if k.startswith("suite:")]  # in the suite's order
    scenarios = [d for s in args.scenarios for d in (suite if s == "suite" else [s])]
    plan = [(s, v) for s in scenarios for v in variants if s.split(":")[0] in v.engine.scenarios]
    outcomes = {(s, v.key): Outcome() for s, v in plan}
    total = sum(1 if scores_text(s) else args.repeats for s, _ in plan)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr) as progress:
        task = progress.add_task("runs", total=total)
        for repeat in range(args.repeats):
            for scenario, variant in plan:
                outcome = outcomes[scenario, variant.key]
                if scores_text(scenario) and repeat > 0:
                    continue  # perplexity is deterministic: one process
                if outcome.error:  # a failure is not retried
                    progress.advance(task)
                    continue
                what = f"{scenario:6} {variant.engine.label} {variant.name} #{repeat + 1}"
                progress.update(task, description=what)
                if not stderr.is_terminal:  # no live bar in a log file: one line per run instead
                    stderr.print(what)
                rows, new_tokens = jobs[scenario]
                job = {"action": "measure", "scenario": "ppl" if scores_text(scenario) else scenario, "model": variant.model,
                       "variant": variant.name, "threads": args.threads, "rows": rows, "new_tokens": new_tokens}
                if scores_text(scenario):
                    job["logprobs_out"] = str(logprobs_file(folder, variant, scenario))
                try:
                    outcome.runs.append(run_child(variant.engine, job, folder, timeout=args.timeout))
                except RunFailed as e:
                    outcome.error = str(e)
                    progress.console.print(f"[red]{scenario} {variant.key} failed: {e}[/]")
                progress.advance(task)
    return outcomes


def scores_text(scenario: str) -> bool:
    """ppl and each suite:<domain> score a text by teacher forcing (one process each, logprobs kept for KL)."""
    return scenario == "ppl" or scenario.startswith("suite:")


def logprobs_file(folder: Path, variant: Variant, scenario: str) -> Path:
    return folder / f"logprobs-{scenario.replace(':', '-')}-{variant.engine.key}-{variant.name}.npy"


def divergences(variants: list[Variant], outcomes: dict[tuple[str, str], Outcome], folder: Path) -> None:
    """Add to each ppl run its mean KL(float || variant) and top-1 agreement with its engine's float variant.

    Perplexity moves by +-0.5% between texts for the same int8 model; the KL divergence of the whole
    next-token distribution, position by position, is the steadier measure of what quantization lost
    (llama.cpp's perplexity tool reports it for the same reason).
    """
    for scenario in sorted({s for s, _ in outcomes if scores_text(s)}):
        for variant in variants:
            reference = next((v for v in variants if v.engine is variant.engine and v.klass == "fp32"), None)
            outcome = outcomes.get((scenario, variant.key))
            paths = (logprobs_file(folder, variant, scenario), logprobs_file(folder, reference, scenario) if reference else None)
            if outcome is None or not outcome.runs or not all(p and p.exists() for p in paths):
                continue
            mine, base = (np.load(p) for p in paths)  # (len-1, vocab) log-probabilities each
            kl = (np.exp(base) * (base - mine)).sum(axis=-1)  # (len-1,)
            outcome.runs[0].update(kl=float(kl.mean()), top1=float((mine.argmax(-1) == base.argmax(-1)).mean()))
        for variant in variants:
            logprobs_file(folder, variant, scenario).unlink(missing_ok=True)


# -- entry point -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edgelm", nargs="+", default=[], metavar="BUNDLE", help="edgelm bundles (float, int8, int4...)")
    p.add_argument("--threads", type=int, default=2, help="threads for every engine [2]")
    p.add_argument("--repeats", type=int, default=3, help="processes per measurement; the median is reported [3]")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {','.join(SCENARIOS)}")
    p.add_argument("--engines", default="edgelm,llama,genai,ct2,transformers", help="comma list [all]")
    p.add_argument("--edgelm-python", help="Python that runs edgelm [this one]")
    p.add_argument("--llama-python", default="/work/peers/llama/bin/python", help="venv with llama-cpp-python")
    p.add_argument("--genai-python", default="/work/peers/genai/bin/python", help="venv with onnxruntime-genai")
    p.add_argument("--ct2-python", default="/work/peers/ct2/bin/python", help="venv with ctranslate2")
    p.add_argument("--transformers-python", help="Python with torch + transformers [this one]")
    p.add_argument("--model", choices=sorted(MODELS), default="smollm2", help="the checkpoint raced [smollm2]")
    p.add_argument("--work", type=Path, help="converted peer models are cached here [per --model]")
    p.add_argument("--gguf", help="source GGUF for llama.cpp [per --model]")
    p.add_argument("--hf-dir", help="fp32 HF folder for genai, CTranslate2, transformers [per --model]")
    p.add_argument("--llama-variants", default="F32,Q8_0,Q4_0,Q4_K_M",
                   help="llama.cpp variants: F32, Q8_0, Q4_0, Q4_K_M (requantized) and shipped (the GGUF as it is) "
                        "[F32,Q8_0,Q4_0,Q4_K_M]")
    p.add_argument("--decode-goal", type=float,
                   help="decode speed goal against llama.cpp for every class [1.2 for 8-bit, 1.1 for 4-bit, 1.0 fp32]")
    p.add_argument("--tokenizer", help="tokenizer.json for the ids [the first --edgelm bundle's, else --hf-dir's]")
    p.add_argument("--text", type=Path, help="English prose for perplexity (UTF-8) [built in]")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one measuring process may take [1800]")
    p.add_argument("--json", type=Path, help="also write every run's raw numbers here")
    p.add_argument("--from-json", type=Path, help="render the tables (and --plot) of a run saved with --json, measuring nothing")
    p.add_argument("--plot", type=Path, help="suite: write the speed/quality frontier plot (PNG) here "
                                             "[docs/frontier-MODEL.png with --write-docs]")
    p.add_argument("--write-docs", nargs="?", const=str(ROOT / "docs/benchmarks.md"), metavar="MD",
                   help="rewrite the model's <!-- bench:peers... --> section of MD [docs/benchmarks.md]")
    args = p.parse_args(argv)
    model = MODELS[args.model]
    args.title, args.section = model["title"], model["section"]
    args.work = args.work or Path(model["work"])
    args.gguf = args.gguf or str(model["gguf"])
    args.hf_dir = args.hf_dir or model["hf_dir"]
    args.llama_variants = [v for v in args.llama_variants.split(",") if v]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.engines = [e for e in args.engines.split(",") if e]
    problems = [f"unknown scenario {s!r}" for s in args.scenarios if s not in SCENARIOS]
    problems += [f"unknown engine {e!r}" for e in args.engines if e not in ("edgelm", "llama", "genai", "ct2", "transformers")]
    problems += [f"{b} has no manifest.json (not a bundle)" for b in args.edgelm if not Path(b, "manifest.json").exists()]
    if "edgelm" in args.engines and not args.edgelm and not args.from_json:
        problems.append("--edgelm needs at least one bundle (or leave edgelm out of --engines)")
    if args.threads < 1 or args.repeats < 1:
        problems.append("--threads and --repeats must be >= 1")
    if problems:
        p.error("; ".join(problems))
    args.work = args.work.resolve()
    return args


def token_jobs(args) -> dict[str, tuple[list[list[int]], int]]:
    """scenario -> (rows of ids, new tokens), from the chosen tokenizer."""
    tokenizer = Path(args.tokenizer) if args.tokenizer else (
        Path(args.edgelm[0], "tokenizer.json") if args.edgelm else Path(args.hf_dir, "tokenizer.json"))
    ids = texts.prose_ids(tokenizer)
    ppl_ids = texts.prose_ids(tokenizer, args.text.read_text(encoding="utf-8")) if args.text else ids
    jobs = texts.scenario_rows(ids, ppl_ids)
    if "suite" in args.scenarios:
        from edgelm.quantize.eval_suite import evaluation_texts

        for domain, text in evaluation_texts().items():
            jobs[f"suite:{domain}"] = ([texts.prose_ids(tokenizer, text)[:texts.PPL_TOKENS]], 0)
    return jobs, tokenizer


def from_json(args) -> tuple[list[Variant], dict[tuple[str, str], Outcome]]:
    """The variants and outcomes of a run saved with --json (--from-json: render its tables and plot again)."""
    raw = json.loads(args.from_json.read_text())
    raw.pop("command", None)
    by_key = {e.key: e for e in engines(args)}
    variants = []
    for key, model in raw.pop("models").items():
        engine_key, name = key.split(":", 1)
        engine = by_key[engine_key]
        klass = dict(engine.variants).get(name) or EDGELM_CLASSES.get(_edgelm_method(model["path"]), "8-bit")
        variants.append(Variant(engine, name, klass, model["path"]))
    outcomes = {tuple(k.split("|", 1)): Outcome(v["runs"], v["error"]) for k, v in raw.items()}
    return variants, outcomes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    notes, variants = [], []
    if args.from_json:
        variants, outcomes = from_json(args)
        tokenizer = Path(args.tokenizer) if args.tokenizer else Path(variants[0].model, "tokenizer.json")
    else:
        jobs, tokenizer = token_jobs(args)
        for engine in engines(args):
            problem = installed(engine)
            if problem:
                notes.append(f"{engine.label} skipped: {problem}")
                stderr.print(f"[yellow]{notes[-1]}[/]")
                continue
            variants += variants_of(engine, args)
        with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
            variants = prepare(variants, args, Path(tmp))
            outcomes = measure(variants, args, jobs, Path(tmp))
            divergences(variants, outcomes, Path(tmp))
    command = "python scripts/bench_peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.from_json:  # the command that measured
        command = json.loads(args.from_json.read_text()).get("command", command)
    markdown = report.render(variants, outcomes, args, notes, command, tokenizer)
    print(markdown)
    if args.json and not args.from_json:
        raw = {f"{s}|{k}": {"runs": o.runs, "error": o.error} for (s, k), o in outcomes.items()}
        raw["models"] = {v.key: {"path": v.model, "size_mb": v.size_mb} for v in variants}
        raw["command"] = command
        args.json.write_text(json.dumps(raw, indent=1))
    plot = args.plot or (Path(args.write_docs).parent / f"frontier-{args.model}.png" if args.write_docs else None)
    if plot and "suite" in args.scenarios:
        report.frontier_plot(variants, outcomes, plot, args.title)
        stderr.print(f"wrote the frontier plot {plot}")
    if args.write_docs:
        report.write_docs(Path(args.write_docs), markdown, args.section)
        stderr.print(f"wrote the peers section of {args.write_docs}")


if __name__ == "__main__":
    main()
