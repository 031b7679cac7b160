"""Human-readable printing of bundles: what export did, and what `edgelm inspect` shows."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgelm.runtime.bundle import open_bundle
from edgelm.runtime.manifest import SEAL_NAME, Manifest, read_manifest

console = Console(soft_wrap=True)  # long lines stay whole when piped


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def bundle_bytes(manifest: Manifest) -> int:
    """Total size of the bundle's files, as the manifest records them."""
    return sum(meta["bytes"] for meta in manifest.files.values())


def _parity_parts(v: dict) -> list[str]:
    """The headline parity numbers of a verification record, for any task."""
    parts = [f"max|diff| {v['max_abs_diff']:.2e}"]
    if "greedy_equal" in v:
        counts = "+".join(map(str, v["greedy_tokens"]))
        parts.append(f"greedy tokens ({counts}) {'equal' if v['greedy_equal'] else 'DIFFER'}")
    if "min_cosine" in v:
        parts.append(f"min cosine {v['min_cosine']:.6f}")
    if "argmax_agreement" in v:
        parts.append(f"argmax agreement {v['argmax_agreement']:.1%}")
    return parts


def verification_line(v: dict) -> str:
    """Every check of a verification record, for export's summary and `edgelm inspect`."""
    parts = _parity_parts(v)
    parts[0] += f" (tol {v['tolerance']:.1e})"
    parts.append("tokenizer ids equal" if v.get("tokenizer_ids_equal") else "tokenizer ids DIFFER")
    parts.append("weights stored once" if v.get("weights_stored_once") else "weights DUPLICATED")
    return ", ".join(parts)


def short_verification(v: dict) -> str:
    """A table cell: the headline parity numbers and the verdict."""
    return ", ".join(_parity_parts(v)) + (" ok" if v.get("passed") else " FAILED")


def print_export_summary(out: Path, manifest: Manifest) -> None:
    v = manifest.verification
    console.print(
        f"[green]exported[/] {manifest.source['model_type']} ({manifest.task}) -> {out}  "
        f"[{_mb(bundle_bytes(manifest))}, {len(manifest.files)} files]"
    )
    console.print(f"  verified against transformers: {verification_line(v)}")
    if v.get("greedy_text"):
        console.print(f"  greedy continuation: {v['greedy_text']!r}")


def print_inspection(bundle: Path, fast: bool = False, as_json: bool = False, provider: str = "auto",
                     threads: int | None = None) -> None:
    if as_json:
        console.print_json(json.dumps(read_manifest(bundle).to_dict()))
        return
    opened = open_bundle(bundle, provider=provider, threads=threads, fast=fast)  # files, graph, tokenizer, template
    manifest, notes = opened.manifest, opened.file_notes
    src = manifest.source
    console.print(f"[bold]{bundle}[/]  edgelm bundle v{manifest.format_version} (written by edgelm {manifest.edgelm_version})")
    console.print(f"  task        {manifest.task}")
    console.print(f"  source      {src.get('architecture')} ({src.get('model_type')}, family {src.get('family')}) from {src.get('path')}")
    console.print(f"  precision   {_precision_line(manifest.precision)}")
    console.print(f"  graph       {manifest.graph_file} opset {manifest.opset}, {_mb(bundle_bytes(manifest))} in {len(manifest.files)} files")
    console.print(f"  max context {manifest.max_context} tokens")
    console.print(f"  special     {manifest.special_tokens}")
    if manifest.generation:
        console.print(f"  generation  {manifest.generation}")
    if manifest.labels:
        console.print(f"  labels      {', '.join(manifest.labels)}")
    if manifest.pooling:
        console.print(f"  pooling     {manifest.pooling.mode}, normalize={manifest.pooling.normalize} -> {manifest.pooling.output} ({manifest.pooling.dimension})")
    if any(manifest.prompts.values()):
        default = f"; default {manifest.default_prompt}" if manifest.default_prompt else ""
        named = escape(", ".join(f"{k}={v!r}" for k, v in manifest.prompts.items()))
        console.print(f"  prompts     {named}{default} (embed --prompt NAME)")
    if manifest.kv_cache:
        kv = manifest.kv_cache
        console.print(
            f"  kv cache    {kv.num_layers} layers x {kv.num_kv_heads} KV heads x {kv.head_size} head size, "
            f"{kv.dtype}, axes ({', '.join(kv.axes)}), names {kv.past_key} -> {kv.present_key}, "
            f"{kv.cache} ({kv.attention})"
        )
        if kv.model_head_size:
            console.print(f"  attention   {kv.attention} on heads padded with zeros from the model's {kv.model_head_size} "
                          f"to {kv.head_size} dimensions (exact; the operator needs a multiple of 16)")
    console.print(_io_table(manifest))
    if manifest.verification:
        console.print(f"  verification: {verification_line(manifest.verification)}")
    if manifest.accuracy:
        verdict = "passed" if manifest.accuracy.get("passed") else "FAILED (written with --no-gate)"
        console.print(f"  accuracy    against the float bundle: {accuracy_cells(manifest.accuracy)}; gate {verdict}")
    console.print(f"  provider    {opened.provider_note}; onnxruntime {ort.__version__} offers "
                  f"{', '.join(ort.get_available_providers())}")
    console.print(f"  threads     {opened.threads.count} ({opened.threads.reason})")
    sealed = (f"manifest.json matches {SEAL_NAME}" if (bundle / SEAL_NAME).exists()
              else f"manifest.json has no {SEAL_NAME} (written before edgelm 0.3)")
    console.print(f"  files       [green]all {len(manifest.files)} match the manifest[/]" + (f" ({'; '.join(notes)})" if notes else "")
                  + f"; {sealed}")
    console.print(f"  conformance {_conformance_line(bundle, manifest)}")


def _conformance_line(bundle: Path, manifest: Manifest) -> str:
    if not manifest.conformance_file:
        return "none (written before edgelm 0.3: re-export to add vectors for `edgelm verify`)"
    from edgelm.runtime import conformance

    vectors = conformance.read(bundle, manifest.conformance_file)
    return (f"{manifest.conformance_file}: {len(vectors['vectors'])} vectors at {vectors.get('precision')} tolerances "
            "(`edgelm verify` runs them)")


def print_verify_report(report, as_json: bool = False) -> None:
    """One row per conformance vector: pass or how far off; then the verdict."""
    if as_json:
        outcomes = [{"name": o.name, "kind": o.kind, "passed": o.passed, "detail": o.detail} for o in report.outcomes]
        console.print_json(json.dumps({"bundle": str(report.bundle), "provider": report.provider, "precision": report.precision,
                                       "written_by": report.written_by, "passed": report.passed, "vectors": outcomes}))
        return
    table = Table(title=f"{report.bundle} on {report.provider} ({report.precision} tolerances; vectors by {report.written_by})")
    for column in ("vector", "kind", "result", "detail"):
        table.add_column(column)
    for o in report.outcomes:
        table.add_row(o.name, o.kind, "[green]pass[/]" if o.passed else "[red]FAIL[/]", o.detail)
    console.print(table)
    failed = len(report.failures)
    console.print(f"[green]all {len(report.outcomes)} vectors pass[/]; every file matches the manifest" if not failed
                  else f"[red]{failed} of {len(report.outcomes)} vectors failed[/]: this bundle does not compute here what it "
                       "computed where it was written (a changed file, tokenizer or onnxruntime)")


def _io_table(manifest: Manifest) -> Table:
    table = Table("", "name", "dtype", "shape", box=None, padding=(0, 1))
    shown_inputs = [t for t in manifest.inputs if not t.name.startswith("past_key_values.")]
    shown_outputs = [t for t in manifest.outputs if not t.name.startswith("present.")]
    for kind, specs, hidden in (("in", shown_inputs, len(manifest.inputs) - len(shown_inputs)),
                                ("out", shown_outputs, len(manifest.outputs) - len(shown_outputs))):
        for t in specs:
            table.add_row(kind, t.name, t.dtype, f"({', '.join(map(str, t.shape))})")
        if hidden:
            table.add_row(kind, f"... {hidden} KV tensors", manifest.kv_cache.dtype, "(see kv cache)")
    return table


def accuracy_cells(accuracy: dict) -> str:
    """The gate's headline numbers, for tables."""
    if "perplexity_increase" in accuracy:
        kl = f", KL {accuracy['kl_divergence']:.4f}" if "kl_divergence" in accuracy else ""  # bundles before KL was recorded
        worst = accuracy.get("worst")  # bundles before the evaluation suite scored one text
        worst = f"; worst {worst['domain']} {worst['perplexity_increase']:+.2%}" if worst else ""
        return (f"ppl {accuracy['perplexity_float']:.2f} -> {accuracy['perplexity_quantized']:.2f} "
                f"({accuracy['perplexity_increase']:+.2%}), top-1 agreement {accuracy['top1_agreement']:.1%}{kl}{worst}")
    if "mean_cosine" in accuracy:
        return f"cosine mean {accuracy['mean_cosine']:.4f}, min {accuracy['min_cosine']:.4f}"
    return f"label agreement {accuracy['label_agreement']:.1%} of {accuracy['compared']}"


def speed_cells(accuracy: dict) -> tuple[str, str, str]:
    """(float speed, quantized speed, ratio) from the gate's speed record."""
    before, after = accuracy["speed"]["float"], accuracy["speed"]["quantized"]
    key, unit = ("decode_tokens_per_second", "tok/s") if "decode_tokens_per_second" in before else ("texts_per_second", "texts/s")
    return f"{before[key]:.1f} {unit}", f"{after[key]:.1f} {unit}", f"{after[key] / before[key]:.2f}x"


def print_quantize_summary(src: Path, out: Path, manifest: Manifest) -> None:
    """What quantize did: size, accuracy against the float bundle and speed, before and after."""
    base = read_manifest(src)
    acc = manifest.accuracy
    before, after = bundle_bytes(base), bundle_bytes(manifest)
    verdict = "[green]passed[/]" if acc["passed"] else "[red]FAILED[/] (kept: --no-gate)"
    console.print(f"[green]quantized[/] {src} -> {out} with {manifest.precision['method']}: gate {verdict}")
    table = Table("", "float", manifest.precision["method"], "change", box=None, padding=(0, 2))
    table.add_row("size", _mb(before), _mb(after), f"{after / before:.1%} of float")
    speed_before, speed_after, ratio = speed_cells(acc)
    table.add_row("speed here", speed_before, speed_after, ratio)
    table.add_row("accuracy", "", accuracy_cells(acc), _limits(acc))
    console.print(table)
    if acc.get("domains"):
        domains = Table("domain", "tokens", "ppl float", "ppl quantized", "change", "top-1", "KL", box=None, padding=(0, 2))
        for name, r in acc["domains"].items():
            domains.add_row(name, str(r["eval_tokens"]), f"{r['perplexity_float']:.2f}", f"{r['perplexity_quantized']:.2f}",
                            f"{r['perplexity_increase']:+.2%}", f"{r['top1_agreement']:.1%}", f"{r['kl_divergence']:.4f}")
        console.print(domains)
    for row in acc.get("greedy", []):
        same = "identical" if row["first_difference"] is None else f"differ from token {row['first_difference']}"
        console.print(f"  [bold]{row['prompt']}[/] ({same})\n    float:     {row['float']!r}\n    quantized: {row['quantized']!r}")
    for failure in acc.get("failures", []):
        console.print(f"  [red]gate:[/] {failure}")


def _limits(accuracy: dict) -> str:
    t = accuracy["thresholds"]
    if "perplexity_increase" in accuracy:
        return f"limit: ppl +{t['max_ppl_increase']:.0%}"
    if "mean_cosine" in accuracy:
        return f"limits: mean {t['min_mean_cosine']}, min {t['min_min_cosine']}"
    return f"limit: {t['min_label_agreement']:.0%}"


def _precision_line(precision: dict) -> str:
    line = f"weights {precision.get('weights')}, activations {precision.get('activations')}"
    if precision.get("method"):
        options = precision.get("options", {})
        line += (f", quantized with {precision['method']} ({options.get('quantized_nodes', '?')} nodes"
                 f"{', kept float: ' + ', '.join(options['kept_float']) if options.get('kept_float') else ''})")
    return line
