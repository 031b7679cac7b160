"""Structured output: decode speed with a JSON schema against without, and how many outputs validate.

    python scripts/bench_structured.py out/smol-int8 --write-docs docs/benchmarks.md

For each schema of scripts/structured_schemas.json (what apps send: required fields, enums, bounded numbers,
arrays, nesting, $defs and anyOf, and OpenAI's JSON mode) a chat prompt asking for that document is decoded greedily with the schema, then
without it for the same number of tokens, alternating, --repeats times each; the table gives the
median decode tokens/s of each and their ratio. Then the schema is run --samples more times sampled
(temperature 0.8, seeds 0..): how many ended on their own (eos) rather than being cut by
--max-new-tokens (a small model can loop inside a string), and how many of those parse and validate
with jsonschema. Compile times are for the first schema (it builds the
vocabulary index) and for each schema after it. It prints a table and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCHEMAS_FILE = Path(__file__).resolve().parent / "structured_schemas.json"  # tests/test_real_models.py runs them too
SCHEMAS = {name: (case["prompt"], case["schema"]) for name, case in json.loads(SCHEMAS_FILE.read_text()).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, help="a decoder bundle (SmolLM2 int8 in docs/benchmarks.md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--write-docs", type=Path, default=None)
    args = p.parse_args()

    import jsonschema
    import onnxruntime
    from peers.report import machine, table, write_docs

    from edgelm.runtime import load

    lm = load(args.bundle, provider="cpu", threads=args.threads)
    start = time.perf_counter()
    lm.json_grammar({"type": "object"})
    first_compile = time.perf_counter() - start
    rows, ratios = [], []
    for name, (prompt, schema) in SCHEMAS.items():
        messages = [{"role": "user", "content": prompt + " Reply in JSON."}]
        start = time.perf_counter()
        lm.json_grammar(schema)
        compile_ms = (time.perf_counter() - start) * 1000
        lm.complete([messages], max_new_tokens=8)  # warm up
        with_schema, without = [], []
        for _ in range(args.repeats):
            c = lm.complete([messages], json_schema=schema, max_new_tokens=args.max_new_tokens)[0]
            with_schema.append(c.decode_tokens_per_second)
            free = lm.complete([messages], max_new_tokens=len(c.token_ids))[0]
            without.append(free.decode_tokens_per_second)
        ended = valid = 0
        for seed in range(args.samples):
            s = lm.complete([messages], json_schema=schema, max_new_tokens=args.max_new_tokens, temperature=0.8, seed=seed)[0]
            if s.finish_reason != "eos":
                continue  # cut by max_new_tokens: an unfinished document
            ended += 1
            try:
                jsonschema.validate(json.loads(s.text), schema)
                valid += 1
            except (json.JSONDecodeError, jsonschema.ValidationError):
                pass
        try:
            jsonschema.validate(json.loads(c.text), schema)
            greedy_ok = c.finish_reason == "eos"
        except (json.JSONDecodeError, jsonschema.ValidationError):
            greedy_ok = False
        a, b = statistics.median(with_schema), statistics.median(without)
        ratios.append(a / b)
        rows.append([name, str(len(c.token_ids)), f"{a:.1f}", f"{b:.1f}", f"**{a / b:.2f}x**", f"{compile_ms:.1f}",
                     "yes" if greedy_ok else "**no**", f"{ended}/{args.samples}", f"{valid}/{ended}"])
        print(f"{name}: {rows[-1][1:]}", file=sys.stderr)
    header = ["schema", "tokens (greedy)", "with schema tok/s", "without tok/s", "ratio", "compile ms",
              "greedy validates", "sampled: ended", "ended: validate"]
    command = f"python scripts/bench_structured.py {args.bundle} --threads {args.threads} --repeats {args.repeats} --samples {args.samples}"
    md = "\n".join([
        "### Structured output (JSON schema): decode speed and validity",
        "",
        f"Machine: {machine()}; {args.threads} threads; onnxruntime {onnxruntime.__version__}; bundle `{args.bundle.name}`.",
        f"Command: `{command}`.",
        "",
        table(header, rows),
        "",
        f"Median ratio {statistics.median(ratios):.2f}x, worst {min(ratios):.2f}x. The first schema compiled in "
        f"{first_compile * 1000:.0f} ms (it indexes the vocabulary once per bundle); each later one in the compile column.",
    ])
    print(md)
    if args.write_docs:
        write_docs(args.write_docs, md, name="structured")


if __name__ == "__main__":
    main()
