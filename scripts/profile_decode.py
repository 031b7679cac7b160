"""Where a decoder bundle's time goes: onnxruntime's profiler over one chat prompt and N greedy tokens.

    python scripts/profile_decode.py BUNDLE [--tokens 64] [--threads 2]

Prints kernel time by operator type and the slowest nodes (prefill included; it is one call of
many). Use it to compare graphs, e.g. edgelm's int4 against onnxruntime-genai's, on one machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import onnxruntime as ort

from edgelm.runtime import load
from edgelm.runtime.generator import Generator, GeneratorParams

PROMPT = "Tell me a story about a lighthouse."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    lm = load(args.bundle, provider="cpu", threads=args.threads)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = args.threads
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    lm.graph.session = ort.InferenceSession(str(args.bundle / lm.manifest.graph_file), options,
                                            providers=["CPUExecutionProvider"])  # the same graph, profiled
    gen = Generator(lm.graph, GeneratorParams(max_new_tokens=args.tokens), lm.manifest.max_context)  # no eos: full length
    gen.append_tokens(lm.encode(PROMPT, chat=bool(lm.manifest.chat_template_file)))
    while not gen.is_done():
        gen.generate_next_token()
    trace = Path(lm.graph.session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    by_node: collections.Counter = collections.Counter()
    op_of = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            by_node[node] += e["dur"]
            op_of[node] = e["args"].get("op_name")
    total = sum(by_node.values())
    by_op: collections.Counter = collections.Counter()
    for node, us in by_node.items():
        by_op[op_of[node]] += us
    print(f"{args.bundle}: {total / 1000:.0f} ms of kernel time for a prompt and {args.tokens} tokens, {args.threads} threads")
    for op, us in by_op.most_common(10):
        print(f"  {op:36s} {100 * us / total:5.1f}%")
    print("slowest nodes:")
    for node, us in by_node.most_common(8):
        print(f"  {node[:56]:56s} {op_of[node]:20s} {100 * us / total:5.1f}%")


if __name__ == "__main__":
    main()
