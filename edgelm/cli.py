"""The `edgelm` command line. Each command imports its stage only when it runs.

Errors edgelm raises on purpose print as one line (`error: ...`) with exit code 1.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from edgelm.errors import EdgelmError, GenerationError
from edgelm.extras import require_extra
from edgelm.runtime.manifest import TASKS
from edgelm.serve.main import Options as ServeOptions  # its defaults are the serve options' (the server loads in serve_cmd)


def one_line_errors(fn):
    """Turn an EdgelmError into `error: ...` on stderr and exit code 1, Ctrl-C (or SIGTERM while a
    bundle is written, edgelm.staging) into `error: interrupted ...` and exit code 130; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EdgelmError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt as e:
            click.echo(f"error: {str(e) or 'interrupted'}", err=True)
            # CPython marks a KeyboardInterrupt that left a string exec (dataclasses build methods
            # so) as unhandled even once caught, and `python -m` then dies of SIGINT instead of
            # exiting 130; every string exec clears the mark first.
            exec("pass", {})
            sys.exit(130)

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
@click.option("--opset", type=int, default=None, help="ONNX opset (default: 21 for decoders, 23 for encoders).")
@one_line_errors
def export_cmd(src: Path, out: Path, task: str | None, force: bool, opset: int | None):
    """Export a checkpoint folder or .gguf file to a verified bundle."""
    require_extra("export", "export")
    from edgelm.export import export

    manifest = export(src, out, task, force=force, opset=opset)
    from edgelm.report import print_export_summary

    print_export_summary(out, manifest)


@cli.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--fast", is_flag=True, help="Check sizes of large files but skip hashing them.")
@click.option("--json", "as_json", is_flag=True, help="Print manifest.json as it is.")
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Report the execution provider this choice resolves to here.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Report the thread count this choice gives here.")
@one_line_errors
def inspect_cmd(bundle: Path, fast: bool, as_json: bool, provider: str, threads: int | None):
    """Show a bundle's manifest, I/O, KV layout and checks, and verify its files."""
    from edgelm.report import print_inspection

    print_inspection(bundle, fast=fast, as_json=as_json, provider=provider, threads=threads)


@cli.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Execution provider to check; auto = CUDA when available, else CPU.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="onnxruntime intra-op threads; 0 = its own choice [default: the CPUs this process may use].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@one_line_errors
def verify_cmd(bundle: Path, provider: str, threads: int | None, as_json: bool):
    """Run BUNDLE here against the conformance vectors it carries; exit 1 if one fails.

    Every file's checksum is checked first. Use it after copying a bundle to another machine,
    after upgrading onnxruntime, or to check another execution provider.
    """
    from edgelm.report import print_verify_report
    from edgelm.runtime import verify

    report = verify(bundle, provider=provider, threads=threads)
    print_verify_report(report, as_json=as_json)
    if not report.passed:
        sys.exit(1)


@cli.command("quantize")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["int8-per-token", "int8-dynamic", "int8-static", "int8", "int4", "int4-mixed"]), default=None,
              help="Default: int8 (weight-only) for decoders, int8-per-token for encoders.")
@click.option("--calibration", "calibration_file", type=click.Path(path_type=Path), default=None,
              help="int8-static, SmoothQuant (int8, int4), GPTQ (int4), int4-mixed's sensitivities and --kv-cache int8: calibration texts, one per line [default: built-in sentences and texts of five domains].")
@click.option("--calibrate-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--eval-file", type=click.Path(path_type=Path), default=None,
              help="Gate texts: running text for decoders (scored as one more domain beside the built-in suite), one text per line for encoders [default: built-in].")
@click.option("--eval-domains", default=None, metavar="LIST",
              help="Decoders: the built-in suite's domains to score, comma-separated (prose,code,technical,legal,dialogue,german) [default: all].")
@click.option("--max-ppl-increase", type=float, default=None, help="Decoder gate: allowed relative perplexity rise [default: 0.03 int8, 0.30 int4, 0.25 int4-mixed]; holds on every domain.")
@click.option("--min-cosine", type=float, default=None, help="Embedding gate: minimum mean cosine [default: 0.99 int8, 0.97 int4].")
@click.option("--keep-float", multiple=True, help="Keep nodes in float: a preset (lm_head, embeddings, attention, mlp) or an fnmatch pattern on node names; repeatable.")
@click.option("--block-size", type=int, default=None, help="int8/int4 weight-only block size [default: 32].")
@click.option("--algorithm", type=click.Choice(["gptq", "rtn", "hqq"]), default=None,
              help="int4/int4-mixed rounding: gptq (errors compensated on the calibration texts), rtn (round-to-nearest) or hqq "
                   "(float zero points, slow kernel; needs torch); all but hqq with a zero point per block  [default: gptq].")
@click.option("--smooth", "smoothing", type=float, default=None,
              help="int8/int4: SmoothQuant alpha, moving activation outliers into the weights (0 turns it off)  [default: 0.5].")
@click.option("--kv-cache", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="Decoders: keep the KV cache in int8 (calibrated per channel): faster decode at long context, slower prompts.")
@click.option("--per-tensor", is_flag=True, help="int8-per-token/dynamic/static: one scale per weight tensor instead of per channel.")
@click.option("--no-gate", is_flag=True, help="Write the bundle even if it fails the gate (the numbers are still recorded).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@one_line_errors
def quantize_cmd(src: Path, out: Path, method: str | None, calibration_file: Path | None, calibrate_method: str,
                 eval_file: Path | None, eval_domains: str | None, max_ppl_increase: float | None, min_cosine: float | None,
                 keep_float: tuple[str, ...], block_size: int | None, algorithm: str, smoothing: float | None, kv_cache: str, per_tensor: bool,
                 no_gate: bool, force: bool):
    """Quantize a float bundle to INT8/INT4, gate it against the float bundle, print what it did."""
    require_extra("quantize", "quantize")
    from edgelm.quantize import Calibration, Method, QuantizeOptions, default_method, quantize
    from edgelm.report import print_quantize_summary
    from edgelm.runtime.manifest import read_manifest

    chosen = Method(method) if method else default_method(read_manifest(src).is_decoder)
    options = QuantizeOptions(method=chosen, keep_float=keep_float, block_size=block_size, algorithm=algorithm,
                              smoothing=smoothing, kv_cache=kv_cache,
                              per_channel=not per_tensor,
                              calibration=Calibration(calibrate_method), calibration_file=calibration_file,
                              eval_file=eval_file, max_ppl_increase=max_ppl_increase, min_mean_cosine=min_cosine,
                              eval_domains=tuple(d.strip() for d in eval_domains.split(",") if d.strip()) if eval_domains else None,
                              gate=not no_gate)
    manifest = quantize(src, out, options, force=force)
    print_quantize_summary(src, out, manifest)


# -- running bundles (edgelm.runtime only: these commands work on a box without torch) ---------
def runtime_options(fn):
    """--provider, --threads, --fast and --verbose, shared by every command that runs a bundle."""
    fn = click.option("--verbose", "-v", is_flag=True, help="Say which provider and how many threads run the bundle.")(fn)
    fn = click.option("--fast", is_flag=True, help="Check large files' sizes only, not their hashes (quicker start).")(fn)
    fn = click.option("--threads", type=click.IntRange(min=0), default=None,
                      help="onnxruntime intra-op threads; 0 = its own choice [default: the CPUs this process may use].")(fn)
    fn = click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                      help="Execution provider; auto = CUDA when available, else CPU.")(fn)
    return fn


def sampling_options(fn):
    """Generation options; unset ones come from the bundle's generation defaults (greedy if none)."""
    for decl, kind, text in reversed((
        ("--max-new-tokens", click.IntRange(min=1), "Most tokens to generate [default: bundle's, else 256]."),
        ("--temperature", click.FloatRange(min=0), "0 = greedy; > 0 samples [default: bundle's, else greedy]."),
        ("--top-k", click.IntRange(min=0), "Keep the K most likely tokens when sampling (0 = off) [default: 50]."),
        ("--top-p", float, "Keep the smallest set of tokens whose probability reaches P, in (0, 1]."),
        ("--repetition-penalty", float, "Penalise tokens already present (1 = off)."),
        ("--seed", int, "Make sampling reproducible."),
    )):
        fn = click.option(decl, type=kind, default=None, help=text)(fn)
    fn = click.option("--stop", multiple=True, help="Stop when this text appears (repeatable); it is not printed.")(fn)
    fn = click.option("--truncate-prompt", is_flag=True, help="Drop the oldest prompt tokens if the prompt is too long.")(fn)
    fn = click.option("--json-schema", "json_schema", default=None, metavar="SCHEMA",
                      help="Output a JSON document that follows this JSON schema (a file, or the schema's JSON text).")(fn)
    fn = click.option("--json", "json_object", is_flag=True, help="Output a JSON object (OpenAI's JSON mode).")(fn)
    return fn


def _load(bundle: Path, provider: str, threads: int | None, fast: bool, verbose: bool = False):
    from edgelm.runtime import load

    front_end = load(bundle, provider=provider, threads=threads, fast=fast)
    for note in front_end.bundle.file_notes:  # what --fast skipped
        click.echo(f"note: {note}", err=True)
    if verbose or provider == "cuda":  # CPU is the normal case on an edge box: said only when asked
        from edgelm.console import runs_on

        click.echo(f"note: {runs_on(front_end.bundle)}", err=True)
    return front_end


def _generation_kwargs(options: dict) -> dict:
    from edgelm.runtime.generator import OPTION_NAMES

    kwargs = {k: options[k] for k in OPTION_NAMES if options.get(k) is not None}
    schema = _json_schema(options["json_schema"], options["json_object"])
    return {**kwargs, **({"json_schema": schema} if schema is not None else {}),
            "stop": list(options["stop"]), "truncate_prompt": options["truncate_prompt"]}


def _json_schema(given: str | None, json_object: bool) -> dict | None:
    """--json-schema (a file's path or the schema's JSON text) or --json, as a schema dict."""
    import json

    if given is not None and json_object:
        raise GenerationError("give --json-schema or --json, not both (--json is the schema {\"type\": \"object\"})")
    if json_object:
        return {"type": "object"}
    if given is None:
        return None
    path = Path(given)
    text = _decoded(path.read_bytes(), str(path)) if not given.lstrip().startswith("{") and path.is_file() else given
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenerationError(f"--json-schema is neither a file nor valid JSON ({e.msg} at character {e.pos}); "
                              "pass a schema file or the schema's JSON text") from None
    if not isinstance(schema, dict):
        raise GenerationError(f"--json-schema must be a JSON object (a schema), got {type(schema).__name__}")
    return schema


@cli.command("generate")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("prompt")
@click.option("--chat/--raw", "chat", default=None,
              help="Wrap the prompt in the chat template as a user message [default: --chat when the bundle has one].")
@sampling_options
@runtime_options
@click.option("--stats", is_flag=True, help="Print tokens, time to first token and tokens/s to stderr.")
@one_line_errors
def generate_cmd(bundle: Path, prompt: str, chat: bool | None, provider: str, threads: int | None, fast: bool,
                 verbose: bool, stats: bool, **options):
    """Generate text from PROMPT (- = read it from stdin) with a decoder bundle, streamed to stdout."""
    from edgelm.console import stream_reply

    if prompt == "-":
        prompt = _decoded(sys.stdin.buffer.read(), "stdin")
    lm = _load(bundle, provider, threads, fast, verbose)
    use_chat = chat if chat is not None else bool(getattr(lm, "manifest").chat_template_file)
    stream_reply(lm, prompt, chat=use_chat, stats=stats, **_generation_kwargs(options))


@cli.command("chat")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--system", default=None, help="A system message to start the conversation with.")
@sampling_options
@runtime_options
@one_line_errors
def chat_cmd(bundle: Path, system: str | None, provider: str, threads: int | None, fast: bool, verbose: bool, **options):
    """Talk to a decoder bundle through its chat template (/reset clears, /exit or Ctrl-D quits)."""
    from edgelm.console import chat_loop

    chat_loop(_load(bundle, provider, threads, fast, verbose), system, **_generation_kwargs(options))


def _texts(texts: tuple[str, ...], file: Path | None, noun: str = "text") -> list[str]:
    """TEXTS from the command line, then one per line from FILE ('-' = stdin); blank lines are skipped."""
    if file is not None:
        texts = (*texts, *_lines_of(file))
    if not texts:
        raise GenerationError(f"no {noun}s: give them as arguments or --file FILE (UTF-8, one per line, - for stdin)"
                              if file is None else f"{file} holds no {noun}s (only blank lines); give one {noun} per line")
    return list(texts)


def _lines_of(file: Path) -> list[str]:
    """FILE's non-blank lines, or one clear error when it is not UTF-8 text."""
    try:
        with click.open_file(str(file), "rb") as stream:
            data = stream.read()
    except OSError as e:
        raise GenerationError(f"cannot read {file}: {e.strerror or e}") from None
    if b"\0" in data:
        raise GenerationError(f"{file} holds NUL bytes: it is a binary file, not text; give a UTF-8 text file, one text per line")
    return [line for line in _decoded(data, str(file)).splitlines() if line.strip()]


def _decoded(data: bytes, source: str) -> str:
    """DATA as UTF-8 text (a leading byte-order mark from Windows editors dropped), or one clear error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise GenerationError(f"{source} is not UTF-8 text (byte {e.start} is {data[e.start:e.start + 1]!r}); "
                              "save it as UTF-8") from None


def _print_json_lines(rows) -> None:
    import json

    for row in rows:
        click.echo(json.dumps(row, ensure_ascii=False))


@cli.command("embed")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", type=click.Path(path_type=Path, allow_dash=True), default=None, help="Texts, one per line (- = stdin).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--prompt", "prompt_name", default=None, metavar="NAME",
              help="A prompt the bundle names (e.g. query, document), put before each text [default: the bundle's default prompt, if any].")
@runtime_options
@one_line_errors
def embed_cmd(bundle: Path, texts: tuple[str, ...], file: Path | None, batch_size: int, prompt_name: str | None,
              provider: str, threads: int | None, fast: bool, verbose: bool):
    """Print one JSON line {"text", "embedding"} per text (the bundle's pooling and normalisation)."""
    texts = _texts(texts, file)
    vectors = _load(bundle, provider, threads, fast, verbose).embed(texts, prompt=prompt_name, batch_size=batch_size)
    _print_json_lines({"text": t, "embedding": [round(float(x), 7) for x in v]} for t, v in zip(texts, vectors))


@cli.command("classify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", type=click.Path(path_type=Path, allow_dash=True), default=None, help="Texts, one per line (- = stdin).")
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="Labels per text (text classifiers).")
@runtime_options
@one_line_errors
def classify_cmd(bundle: Path, texts: tuple[str, ...], file: Path | None, top_k: int, provider: str,
                 threads: int | None, fast: bool, verbose: bool):
    """Print one JSON line per text: its labels and scores (or, for a token classifier, each token's)."""
    texts = _texts(texts, file)
    encoder = _load(bundle, provider, threads, fast, verbose)
    if getattr(encoder, "task", None) == "token-classification":
        _print_json_lines({"text": t, "tokens": r} for t, r in zip(texts, encoder.classify_tokens(texts)))
    else:
        _print_json_lines({"text": t, "labels": r} for t, r in zip(texts, encoder.classify(texts, top_k=top_k)))


@cli.command("rerank")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("query")
@click.argument("documents", nargs=-1)
@click.option("--file", type=click.Path(path_type=Path, allow_dash=True), default=None, help="Documents, one per line (- = stdin).")
@click.option("--top-n", type=click.IntRange(min=1), default=None, help="Print only the N most relevant [default: all].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@runtime_options
@one_line_errors
def rerank_cmd(bundle: Path, query: str, documents: tuple[str, ...], file: Path | None, top_n: int | None,
               batch_size: int, provider: str, threads: int | None, fast: bool, verbose: bool):
    """Rank DOCUMENTS by relevance to QUERY with a cross-encoder bundle: one JSON line
    {"index", "score", "document"} per document, most relevant first."""
    documents = _texts(documents, file, "document")
    results = _load(bundle, provider, threads, fast, verbose).rerank(query, documents, top_n=top_n, batch_size=batch_size)
    _print_json_lines({**r, "document": documents[r["index"]]} for r in results)


@cli.command("fill-mask")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Candidates per mask.")
@runtime_options
@one_line_errors
def fill_mask_cmd(bundle: Path, texts: tuple[str, ...], top_k: int, provider: str, threads: int | None, fast: bool,
                  verbose: bool):
    """Print one JSON line per text: the likeliest fillers of each mask token."""
    results = _load(bundle, provider, threads, fast, verbose).fill_mask(list(texts), top_k=top_k)
    _print_json_lines({"text": t, "masks": r} for t, r in zip(texts, results))


@cli.command("batch")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--column", default="text", show_default=True, help="The input column that holds the texts.")
@click.option("--task", type=click.Choice(["embed", "classify", "generate"]), default=None,
              help="Default: what the bundle serves (feature-extraction: embed, text-classification: classify, "
                   "text-generation: generate).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Rows per runtime call.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run on Ray actors: auto (a cluster on this machine, else a new local one) or a cluster's address.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Copies of the bundle working side by side: threads of this process, or Ray actors "
                   "[default: one per CPU, of this machine or of the Ray cluster].")
@click.option("--output-format", type=click.Choice(["jsonl", "csv", "parquet"]), default=None,
              help="Format of a folder OUTPUT's files [default: each input file's].")
@click.option("--force", is_flag=True, help="Replace an existing OUTPUT; start an unfinished run over.")
@click.option("--part-rows", type=click.IntRange(min=1), default=1024, show_default=True,
              help="A part is saved once this many rows are done (in whole batches): about the most a killed run loses.")
@click.option("--chat/--raw", "chat", default=None,
              help="generate: wrap each text in the chat template as a user message [default: --chat when the bundle has one].")
@sampling_options
@runtime_options
@one_line_errors
def batch_cmd(bundle: Path, input_path: Path, output: Path, column: str, task: str | None, batch_size: int,
              ray_address: str | None, workers: int | None, output_format: str | None, force: bool, part_rows: int,
              chat: bool | None, provider: str, threads: int | None, fast: bool, verbose: bool, **options):
    """Run BUNDLE over every row of INPUT into OUTPUT (JSONL, CSV or parquet files or folders), resumably.

    OUTPUT keeps INPUT's columns and adds the result (embedding; label and score; or generated_text,
    finish_reason, prompt_tokens, completion_tokens) and error (why a bad row was skipped). A run
    killed half way and started again with the same OUTPUT goes on where it stopped. See docs/batch.md.
    """
    require_extra("ray" if ray_address else "batch", "batch --ray" if ray_address else "batch")
    from edgelm.batch import run

    generation = {k: v for k, v in _generation_kwargs(options).items() if k not in ("stop", "truncate_prompt")}
    summary = run(bundle, input_path, output, column=column, task=task, batch_size=batch_size, ray=ray_address,
                  workers=workers, threads=threads, provider=provider, fast=fast, force=force,
                  output_format=output_format, chat=chat, stop=tuple(options["stop"]),
                  truncate_prompt=options["truncate_prompt"], part_rows=part_rows, **generation)
    bad = f", {summary.bad_rows:,} bad (see the error column)" if summary.bad_rows else ""
    kept = f", {summary.resumed:,} kept from an earlier run" if summary.resumed else ""
    click.echo(f"wrote {summary.output}: {summary.rows:,} rows{bad}{kept}; {summary.computed:,} computed in "
               f"{summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s, {summary.where})", err=True)


@cli.command("serve")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--name", "names", multiple=True, help="Model name of each bundle, in order [default: its folder's name].")
@click.option("--host", default=ServeOptions.host, show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=ServeOptions.port, show_default=True)
@click.option("--api-key", envvar="EDGELM_API_KEY", default=ServeOptions.api_key,
              help="Require `Authorization: Bearer KEY` on /v1/* [env: EDGELM_API_KEY].")
@click.option("--max-batch", type=click.IntRange(min=1), default=ServeOptions.max_batch, show_default=True,
              help="Requests decoded together per decoder bundle (KV cache slots).")
@click.option("--max-queue", type=click.IntRange(min=1), default=ServeOptions.max_queue, show_default=True,
              help="Requests that may wait for a slot; more get 429 with Retry-After.")
@click.option("--max-tokens-cap", type=click.IntRange(min=1), default=ServeOptions.max_tokens_cap,
              help="Largest max_tokens a request may ask for [default: the model's context].")
@click.option("--max-body", "max_body_bytes", type=click.IntRange(min=1024), default=ServeOptions.max_body_bytes, show_default=True,
              help="Largest request body in bytes; more gets 413.")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=ServeOptions.drain_timeout, show_default=True,
              help="Seconds SIGTERM waits for in-flight requests before stopping.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=ServeOptions.cache_mb,
              help="Host memory per decoder bundle for prompt prefixes kept beyond the --max-batch slots, so a chat's "
                   "next turn prefills only its new messages (0: off) [default: 8,192 tokens' keys, at most 256].")
@click.option("--chunked-prefill/--no-chunked-prefill", default=ServeOptions.chunked_prefill, show_default=True,
              help="Prefill a prompt that arrives while others decode in chunks between their steps, so their "
                   "streams keep flowing (--no-chunked-prefill: prefill it whole at once).")
@runtime_options
@one_line_errors
def serve_cmd(bundles: tuple[Path, ...], names: tuple[str, ...], **options):
    """Serve bundles over OpenAI's HTTP API (chat, completions, embeddings; and /v1/rerank), batching across clients."""
    require_extra("serve", "serve")
    from edgelm.serve.main import serve

    serve(list(bundles), list(names), ServeOptions(**options))


def main():
    import warnings

    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"  # one line, no source echo
    try:
        cli(prog_name="edgelm")
    except KeyboardInterrupt:  # Ctrl-C outside a command (while click parses): no traceback
        sys.exit(130)


if __name__ == "__main__":
    main()
