"""Markdown for bench_peers.py: the machine header, a table per scenario, agreement and targets.

Rows are grouped by precision class (fp32, 8-bit, 4-bit), edgelm first. "vs best peer" compares
an edgelm variant with the best peer of its class on the scenario's headline number (higher
tokens/s, or shorter time to first token for the long prompt); > 1.00x means edgelm is ahead.
A dash is a scenario an engine does not do (no batching); "failed" has its reason under the table.
"""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

from peers import texts

CLASSES = ("fp32", "8-bit", "4-bit")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
DASH = "–"


# -- numbers -----------------------------------------------------------------------------------
def get(outcomes, scenario: str, variant, metric: str) -> float | None:
    outcome = outcomes.get((scenario, variant.key))
    return outcome.median(metric) if outcome else None


def cell(outcomes, scenario: str, variant, metric: str, fmt) -> str:
    """Formatted median, a dash when not run, 'failed' when it failed."""
    outcome = outcomes.get((scenario, variant.key))
    if outcome is None:
        return DASH
    if outcome.error and not outcome.runs:
        return "failed"
    value = outcome.median(metric)
    return DASH if value is None else fmt(value)


def tok_s(v: float) -> str:
    return f"{v:.1f}"


def ms(v: float) -> str:
    return f"{v * 1000:.0f} ms"


def mb(v: float) -> str:
    return f"{v:.0f} MB"


def pct(v: float) -> str:
    return f"{v * 100:+.2f}%" if abs(v) >= 5e-5 else "+0.00%"


def best_peer(variants, outcomes, scenario: str, metric: str, klass: str, lower: bool = False):
    """(variant, value) of the best non-edgelm variant of KLASS, or (None, None)."""
    scored = [(v, get(outcomes, scenario, v, metric)) for v in variants if v.engine.key != "edgelm" and v.klass == klass]
    scored = [(v, x) for v, x in scored if x is not None]
    if not scored:
        return None, None
    return (min if lower else max)(scored, key=lambda pair: pair[1])


def vs_best(variants, outcomes, variant, scenario: str, metric: str, lower: bool = False) -> str:
    """'1.23x vs llama.cpp Q8_0' for an edgelm row; empty for peers."""
    if variant.engine.key != "edgelm":
        return ""
    mine = get(outcomes, scenario, variant, metric)
    peer, theirs = best_peer(variants, outcomes, scenario, metric, variant.klass, lower)
    if mine is None or peer is None:
        return DASH
    ratio = theirs / mine if lower else mine / theirs
    return f"{ratio:.2f}x vs {peer.engine.label} {peer.name}"


def ordered(variants) -> list:
    """By precision class, edgelm first within a class, then the command line's engine order."""
    return sorted(variants, key=lambda v: (CLASSES.index(v.klass), v.engine.key != "edgelm"))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# -- the scenario tables -----------------------------------------------------------------------
def scenario_table(scenario: str, variants, outcomes) -> str:
    """One markdown table for SCENARIO over every variant."""
    head = ["engine", "variant", "class"]
    rows = []
    for v in ordered(variants):
        c = lambda metric, fmt: cell(outcomes, scenario, v, metric, fmt)  # noqa: E731
        if scenario == "single":
            size = f"{v.size_mb:.0f} MB" if v.size_mb is not None else DASH
            extra = [c("decode_tok_s", tok_s), c("ttft_s", ms), vs_best(variants, outcomes, v, scenario, "decode_tok_s"),
                     size]
        elif scenario == "long":
            extra = [c("ttft_s", ms), c("decode_tok_s", tok_s), vs_best(variants, outcomes, v, scenario, "ttft_s", lower=True)]
        elif scenario == "deep":
            deep, single = get(outcomes, "deep", v, "decode_tok_s"), get(outcomes, "single", v, "decode_tok_s")
            kept = f"{deep / single * 100:.0f}%" if deep and single else DASH
            extra = [c("decode_tok_s", tok_s), c("ttft_s", ms), c("rss_peak_mb", mb), kept,
                     vs_best(variants, outcomes, v, scenario, "decode_tok_s")]
        elif scenario == "batch":
            extra = [c("aggregate_tok_s", tok_s), vs_best(variants, outcomes, v, scenario, "aggregate_tok_s")]
        else:
            extra = ppl_cells(v, variants, outcomes)
        rows.append([v.engine.label, v.name, v.klass] + extra)
    return table(head + HEADERS[scenario], rows)


HEADERS = {
    "single": ["decode tok/s", "time to first token", "decode vs best peer", "model on disk"],
    "long": ["time to first token (prefill)", "decode tok/s", "prefill vs best peer"],
    "deep": ["decode tok/s", "time to first token", "peak RSS", "decode kept vs single", "decode vs best peer"],
    "batch": ["aggregate tok/s", "vs best peer"],
    "ppl": ["perplexity", "vs same engine's float", "vs edgelm fp32", "KL vs same engine's float", "top-1 agreement"],
}

TITLES = {
    "single": f"single: {texts.SINGLE_PROMPT}-token prompt, {texts.SINGLE_NEW} new tokens",
    "long": f"long: {texts.LONG_PROMPT}-token prompt, {texts.LONG_NEW} new tokens",
    "deep": f"deep: {texts.DEEP_PROMPT:,}-token prompt, {texts.DEEP_NEW} new tokens",
    "batch": (f"batch: {len(texts.BATCH_PROMPTS)} prompts of {min(texts.BATCH_PROMPTS)}-{max(texts.BATCH_PROMPTS)} tokens"
              f" x {texts.BATCH_NEW} new tokens, aggregate over the wall time including prefill"),
    "ppl": f"perplexity: {texts.PPL_TOKENS:,} tokens of English prose, one window, teacher forcing",
    "suite": (f"evaluation suite: perplexity change against the engine's own float, per domain (first "
              f"{texts.PPL_TOKENS:,} tokens of each text, one window, teacher forcing)"),
}


# -- the evaluation suite: per domain, and the speed/quality frontier ----------------------------
def suite_domains(outcomes) -> list[str]:
    return list(dict.fromkeys(s.split(":", 1)[1] for s, _ in outcomes if s.startswith("suite:")))


def suite_increases(outcomes, variant, variants) -> dict[str, float]:
    """Domain -> perplexity change of VARIANT against its own engine's float variant (measured domains only)."""
    reference = float_of(variant, variants)
    changes = {}
    for domain in suite_domains(outcomes):
        mine = get(outcomes, f"suite:{domain}", variant, "ppl")
        base = get(outcomes, f"suite:{domain}", reference, "ppl") if reference else None
        if mine is not None and base:
            changes[domain] = mine / base - 1
    return changes


def worst_and_median(changes: dict[str, float]) -> tuple[float, float]:
    """The largest and the median perplexity change over domains (the median as the quantize gate takes it)."""
    return max(changes.values()), statistics.median(changes.values())


def suite_table(variants, outcomes) -> str:
    """Perplexity change against the engine's own float per domain, then the worst and median domain and worst KL."""
    domains = suite_domains(outcomes)
    rows = []
    for v in ordered(variants):
        if v.klass == "fp32":
            continue
        changes = suite_increases(outcomes, v, variants)
        kls = [get(outcomes, f"suite:{d}", v, "kl") for d in domains]
        kls = [k for k in kls if k is not None]
        cells = [pct(changes[d]) if d in changes else cell(outcomes, f"suite:{d}", v, "ppl", lambda x: DASH) for d in domains]
        worst, median = worst_and_median(changes) if len(changes) == len(domains) else (None, None)
        rows.append([v.engine.label, v.name, v.klass, *cells, pct(worst) if worst is not None else DASH,
                     pct(median) if median is not None else DASH, f"{max(kls):.4f}" if kls else DASH])
    return table(["engine", "variant", "class", *domains, "worst", "median", "worst KL"], rows)


def frontier_points(variants, outcomes) -> list[tuple]:
    """(variant, size MB, decode tok/s of `single`, worst and median suite perplexity change) of every
    quantized variant with every number."""
    points = []
    domains = suite_domains(outcomes)
    for v in ordered(variants):
        changes = suite_increases(outcomes, v, variants) if v.klass != "fp32" else {d: 0.0 for d in domains}
        speed = get(outcomes, "single", v, "decode_tok_s")
        if speed is None or not domains or len(changes) != len(domains):
            continue
        points.append((v, v.size_mb, speed, *worst_and_median(changes)))
    return points


def frontier_table(variants, outcomes) -> str:
    rows = [[v.engine.label, v.name, v.klass, mb(size) if size else DASH, tok_s(speed), pct(worst), pct(median)]
            for v, size, speed, worst, median in sorted(frontier_points(variants, outcomes), key=lambda p: -p[2])]
    return table(["engine", "variant", "class", "size", "decode tok/s (single)", "worst domain ppl change",
                  "median domain ppl change"], rows)


def frontier_plot(variants, outcomes, path: Path, title: str) -> None:
    """Decode tok/s against the worst domain's perplexity change, one point per variant, an engine per marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = {"edgelm": ("o", "tab:blue"), "llama": ("s", "tab:orange"), "genai": ("^", "tab:green"),
               "ct2": ("D", "tab:red")}
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for v, _, speed, worst, _ in frontier_points(variants, outcomes):
        marker, color = markers.get(v.engine.key, ("x", "gray"))
        ax.scatter(speed, worst * 100, marker=marker, color=color, s=50,
                   label=v.engine.label if v.engine.label not in ax.get_legend_handles_labels()[1] else None)
        below = v.engine.key != "edgelm"  # labels of near points apart: edgelm above, peers below
        ax.annotate(v.name, (speed, worst * 100), textcoords="offset points", xytext=(5, -11 if below else 4), fontsize=8)
    ax.set_xlabel("decode tokens/s (25-token prompt, 2 threads)")
    ax.set_ylabel("worst-domain perplexity change vs float (%)")
    ax.set_title(f"{title}: speed against quality", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, machine(), fontsize=6, color="gray")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def float_of(variant, variants):
    """The same engine's fp32 variant."""
    return next((v for v in variants if v.engine.key == variant.engine.key and v.klass == "fp32"), None)


def edgelm_fp32(variants):
    return next((v for v in variants if v.engine.key == "edgelm" and v.klass == "fp32"), None)


def ppl_increase(outcomes, variant, reference) -> float | None:
    mine = get(outcomes, "ppl", variant, "ppl")
    base = get(outcomes, "ppl", reference, "ppl") if reference else None
    return mine / base - 1 if mine is not None and base is not None else None


def ppl_cells(v, variants, outcomes) -> list[str]:
    own, edge = ppl_increase(outcomes, v, float_of(v, variants)), ppl_increase(outcomes, v, edgelm_fp32(variants))
    return [cell(outcomes, "ppl", v, "ppl", lambda x: f"{x:.3f}"),
            DASH if own is None else pct(own), DASH if edge is None else pct(edge),
            cell(outcomes, "ppl", v, "kl", lambda x: f"{x:.4f}"), cell(outcomes, "ppl", v, "top1", lambda x: f"{x * 100:.1f}%")]


# -- greedy agreement --------------------------------------------------------------------------
def agreement(variants, outcomes, tokenizer: Path) -> str:
    """First generated ids of the single scenario per variant, against edgelm fp32 (or the first fp32)."""
    firsts = {}
    for v in ordered(variants):
        outcome = outcomes.get(("single", v.key))
        runs = [tuple(r["first_ids"]) for r in outcome.runs] if outcome else []
        if runs:
            firsts[v.key] = (v, runs[0], len(set(runs)) == 1)
    if not firsts:
        return ""
    reference = edgelm_fp32(variants) or next((v for v, _, _ in firsts.values() if v.klass == "fp32"), None)
    ref_ids = firsts.get(reference.key, (None, None))[1] if reference else None
    rows = []
    for v, ids, stable in firsts.values():
        same = DASH if ref_ids is None else f"{sum(a == b for a, b in zip(ids, ref_ids))}/{len(ref_ids)}"
        text = texts.decode(tokenizer, list(ids)).replace("|", "\\|").replace("\n", "\\n")
        rows.append([v.engine.label, v.name, " ".join(map(str, ids)), f"`{text}`", same, "yes" if stable else "no"])
    ref = f"{reference.engine.label} {reference.name}" if reference else "none"
    return table(["engine", "variant", "first 8 greedy ids (single)", "text", f"same as {ref}", "same every run"], rows)


# -- targets -----------------------------------------------------------------------------------
def _peer(variants, engine: str, name: str):
    return next((v for v in variants if v.engine.key == engine and v.name == name), None)


def _ratio_row(what: str, mine: float | None, theirs: float | None, goal: float, unit: str = " tok/s") -> list[str]:
    if mine is None or theirs is None:
        return [what, "n/a", f">= {goal:.2f}x", "n/a"]
    ratio = mine / theirs
    return [what, f"{mine:.1f} vs {theirs:.1f}{unit} = {ratio:.2f}x", f">= {goal:.2f}x", "yes" if ratio >= goal else "**no**"]


SPEED_TARGETS = {  # class -> [(engine, variant, factor)] for single-prompt decode
    "8-bit": [("llama", "Q8_0", 1.2), ("genai", "int8", 1.1)],
    "4-bit": [("llama", "Q4_0", 1.1), ("genai", "int4", 1.0)],
    "fp32": [("ct2", "float32", 1.2), ("llama", "F32", 1.0)],
}
PEER_LABELS = {"llama": "llama.cpp", "genai": "onnxruntime-genai", "ct2": "CTranslate2"}
LLAMA_OF_CLASS = {"fp32": "F32", "8-bit": "Q8_0", "4-bit": "Q4_0"}
GENAI_OF_CLASS = {"fp32": "fp32", "8-bit": "int8", "4-bit": "int4"}


def engine_labels(variants) -> list[str]:
    """The peers raced, in a stable order."""
    keys = {v.engine.key for v in variants}
    return [label for key, label in PEER_LABELS.items() if key in keys] or ["its peers"]


def targets(variants, outcomes, decode_goal: float | None = None) -> str:
    """Each target: what was measured, the goal, met or not (n/a when a number is missing).
    DECODE_GOAL replaces every decode goal against llama.cpp (the second model's race asks for parity)."""
    rows = []
    for v in ordered([v for v in variants if v.engine.key == "edgelm"]):
        name = f"edgelm {v.name}"
        for engine, peer_name, goal in ([] if v.name == "int4-mixed" else SPEED_TARGETS[v.klass]):  # its own: Q4_K_M
            goal = decode_goal if decode_goal and engine == "llama" else goal
            peer = _peer(variants, engine, peer_name)
            rows.append(_ratio_row(f"{name} decode (single) vs {PEER_LABELS[engine]} {peer_name}",
                                   get(outcomes, "single", v, "decode_tok_s"),
                                   get(outcomes, "single", peer, "decode_tok_s") if peer else None, goal))
        rows.append(_ratio_row(f"{name} deep decode vs its single decode", get(outcomes, "deep", v, "decode_tok_s"),
                               get(outcomes, "single", v, "decode_tok_s"), 0.85))
        llama = _peer(variants, "llama", LLAMA_OF_CLASS[v.klass])
        rows.append(_ttft_row(f"{name} deep time to first token vs llama.cpp {LLAMA_OF_CLASS[v.klass]}",
                              get(outcomes, "deep", v, "ttft_s"), get(outcomes, "deep", llama, "ttft_s") if llama else None))
        genai = _peer(variants, "genai", GENAI_OF_CLASS[v.klass])
        rows.append(_ratio_row(f"{name} batch aggregate vs onnxruntime-genai {GENAI_OF_CLASS[v.klass]}",
                               get(outcomes, "batch", v, "aggregate_tok_s"),
                               get(outcomes, "batch", genai, "aggregate_tok_s") if genai else None, 1.0))
        rows += _ppl_targets(v, variants, outcomes)
        rows += _suite_targets(v, variants, outcomes)
    rows = [r for r in rows if r[1] != "n/a"]  # a target whose scenario was not run says nothing
    return table(["target", "measured", "goal", "met"], rows) if rows else ""


def _ttft_row(what: str, mine: float | None, theirs: float | None) -> list[str]:
    if mine is None or theirs is None:
        return [what, "n/a", "<= 0.80x", "n/a"]
    ratio = mine / theirs
    return [what, f"{mine * 1000:.0f} vs {theirs * 1000:.0f} ms = {ratio:.2f}x", "<= 0.80x", "yes" if ratio <= 0.8 else "**no**"]


def _ppl_targets(v, variants, outcomes) -> list[list[str]]:
    """int8: within 0.5% of edgelm fp32; int4: increase no more than llama.cpp Q4_0's over F32."""
    mine = ppl_increase(outcomes, v, edgelm_fp32(variants))
    if v.klass == "8-bit":
        measured = "n/a" if mine is None else pct(mine)
        met = "n/a" if mine is None else ("yes" if mine <= 0.005 else "**no**")
        return [[f"edgelm {v.name} perplexity vs edgelm fp32", measured, "<= +0.50%", met]]
    if v.klass == "4-bit":
        q4, f32 = _peer(variants, "llama", "Q4_0"), _peer(variants, "llama", "F32")
        theirs = ppl_increase(outcomes, q4, f32) if q4 and f32 else None
        if mine is None or theirs is None:
            return [[f"edgelm {v.name} perplexity increase vs llama.cpp Q4_0's", "n/a", "<= llama.cpp's", "n/a"]]
        return [[f"edgelm {v.name} perplexity increase vs llama.cpp Q4_0's", f"{pct(mine)} vs {pct(theirs)}",
                 "<= llama.cpp's", "yes" if mine <= theirs else "**no**"]]
    return []


def _suite_targets(v, variants, outcomes) -> list[list[str]]:
    """Issue 26's: int8 within 0.5% on every domain; int4 no worse than llama.cpp Q4_0 on every domain; int4-mixed no
    worse than Q4_K_M on every domain, decoding at least as fast, in at most 1.1x its file."""
    if not suite_domains(outcomes):
        return []
    mine = suite_increases(outcomes, v, variants)
    name = f"edgelm {v.name}"
    if v.klass == "8-bit":
        worst = max(mine.values()) if mine else None
        return [[f"{name} perplexity change on every suite domain", "n/a" if worst is None else f"worst {pct(worst)}",
                 "<= +0.50%", "n/a" if worst is None else ("yes" if worst <= 0.005 else "**no**")]]
    if v.klass != "4-bit":
        return []
    peer = _peer(variants, "llama", "Q4_K_M" if v.name == "int4-mixed" else "Q4_0")
    if peer is None:
        return []
    theirs = suite_increases(outcomes, peer, variants)
    lost = [d for d in mine if d in theirs and mine[d] > theirs[d]]
    measured = ", ".join(f"{d} {pct(mine[d])} vs {pct(theirs[d])}" for d in mine if d in theirs) or "n/a"
    rows = [[f"{name} perplexity change vs llama.cpp {peer.name}'s, every domain", measured, "<= on every domain",
             "n/a" if not theirs else ("yes" if not lost else f"**no** ({', '.join(lost)})")]]
    if v.name == "int4-mixed":
        rows.append(_ratio_row(f"{name} decode (single) vs llama.cpp Q4_K_M", get(outcomes, "single", v, "decode_tok_s"),
                               get(outcomes, "single", peer, "decode_tok_s"), 1.0))
        size = v.size_mb / peer.size_mb if v.size_mb and peer.size_mb else None
        rows.append([f"{name} size vs llama.cpp Q4_K_M's file", "n/a" if size is None else
                     f"{v.size_mb:.0f} vs {peer.size_mb:.0f} MB = {size:.2f}x", "<= 1.10x",
                     "n/a" if size is None else ("yes" if size <= 1.1 else "**no**")])
    return rows


# -- header and page ---------------------------------------------------------------------------
def machine() -> str:
    """CPU model, cores and the SIMD/matrix flags that decide which kernels engines pick."""
    model, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = [f for f in FLAGS if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(present) or 'none of ' + ' '.join(FLAGS)}"


def engine_lines(variants, outcomes) -> list[str]:
    """One line per engine: the versions and options its runner reported."""
    seen = {}
    for (scenario, key), outcome in outcomes.items():
        for run in outcome.runs:
            seen.setdefault(key.split(":")[0], set()).add(run["info"])
    return [f"- {' / '.join(sorted(infos))}" for _, infos in sorted(seen.items())]


def render(variants, outcomes, args, notes: list[str], command: str, tokenizer: Path) -> str:
    """The whole section: header, one table per scenario, agreement, targets."""
    parts = [
        f"### {args.title}: edgelm against {', '.join(engine_labels(variants))}",
        "",
        f"Machine: {machine()}. {args.threads} threads for every engine; greedy, forced to full length "
        f"(eos ignored), the same token ids for every engine; each number is the median of {args.repeats} "
        "separate process(es), each the median of 3 timed runs after one warm-up (deep: 1; perplexity: one "
        "process), processes of all engines interleaved. Time to first token "
        "includes prefill; decode tok/s counts the tokens after the first.",
        f"Command: `{command}`.",
        "",
        "Engines:",
        *engine_lines(variants, outcomes),
        *[f"- {note}" for note in notes],
    ]
    for scenario in args.scenarios:
        if scenario == "suite":
            parts += ["", f"#### {TITLES[scenario]}", "", suite_table(variants, outcomes),
                      "", "#### Speed against quality (the frontier: single decode, worst and median suite domain)", "",
                      frontier_table(variants, outcomes)]
        else:
            parts += ["", f"#### {TITLES[scenario]}", "", scenario_table(scenario, variants, outcomes)]
        failures = [f"- {key}: {o.error}" for (s, key), o in outcomes.items() if s.split(":")[0] == scenario and o.error]
        parts += ["", "Failed:", *failures] if failures else []
    if "single" in args.scenarios:
        parts += ["", "#### Greedy agreement (first tokens of the single scenario)", "",
                  agreement(variants, outcomes, tokenizer)]
    parts += ["", "#### Targets (from the numbers above)", "", targets(variants, outcomes, args.decode_goal)]
    return "\n".join(parts) + "\n"


def write_docs(path: Path, markdown: str, name: str = "peers") -> None:
    """Put MARKDOWN between the <!-- bench:NAME --> markers of PATH (appended with markers if it has none)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    page = path.read_text() if path.exists() else ""
    section = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in page and end in page:
        before, rest = page.split(begin, 1)
        page = before + section + rest.split(end, 1)[1]
    else:
        page = page.rstrip() + "\n\n" + section + "\n"
    path.write_text(page)
