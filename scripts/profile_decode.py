"""Where a decoder bundle's time goes: onnxruntime's profiler over one chat prompt and N greedy tokens.

    python scripts/profile_decode.py BUNDLE [--tokens 64] [--threads 2]
    python scripts/profile_decode.py GENAI_MODEL_FOLDER --genai     # onnxruntime-genai's graph, same prompt ids
    python scripts/profile_decode.py BUNDLE --no-profile             # decode step time only (compare graphs this way)
    python scripts/profile_decode.py BUNDLE --context 1976 --tokens 33  # decode steps after a long prompt (deep decode)

Prints kernel time by operator type and the slowest nodes (prefill included; it is one call of
many), and the wall time per decode step beside the kernel time in it (the rest is the loop and
onnxruntime's own overhead). Use it to compare graphs, e.g. edgelm's int4 against
onnxruntime-genai's, on one machine. onnxruntime-genai's graph is driven here by a plain
onnxruntime loop as genai drives it (past and present bound to one max-length buffer, an
attention mask growing by one), so kernel times compare graph against graph.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgelm.runtime import load
from edgelm.runtime.generator import Generator, GeneratorParams

PROMPT = "Tell me a story about a lighthouse."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference", type=Path, default=Path("/work/conf-bundles/smollm2"),
                   help="with --genai: an edgelm bundle of the same model, for the prompt's token ids")
    p.add_argument("--genai", action="store_true", help="BUNDLE is an onnxruntime-genai model folder (genai_config.json)")
    p.add_argument("--context", type=int, help="prompt of this many tokens (the prompt repeated) instead of the chat prompt")
    p.add_argument("--no-profile", action="store_true",
                   help="time the decode steps only: the profiler's cost per node would favour the graph with fewer nodes")
    args = p.parse_args()
    lm = load(args.reference, provider="cpu", threads=args.threads) if args.genai else load(args.bundle, provider="cpu", threads=args.threads)
    ids = lm.encode(PROMPT, chat=bool(lm.manifest.chat_template_file))
    if args.context:
        ids = (ids * (args.context // len(ids) + 1))[:args.context]
    options = ort.SessionOptions()
    options.enable_profiling = not args.no_profile
    options.intra_op_num_threads = args.threads
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    if args.genai:
        session = ort.InferenceSession(str(args.bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
        step_seconds = _genai_loop(session, args.bundle, ids, args.tokens)
    else:
        session = ort.InferenceSession(str(args.bundle / lm.manifest.graph_file), options,
                                       providers=["CPUExecutionProvider"])  # the same graph, profiled
        lm.graph.session = session
        gen = Generator(lm.graph, GeneratorParams(max_new_tokens=args.tokens), lm.manifest.max_context)  # no eos: full length
        gen.append_tokens(ids)
        gen.generate_next_token()  # the first choice needs no forward pass; the rest each need one step
        started = time.perf_counter()
        while not gen.is_done():
            gen.generate_next_token()
        step_seconds = (time.perf_counter() - started) / (args.tokens - 1)
    if args.no_profile:
        print(f"{args.bundle}: decode step {1000 * step_seconds:.2f} ms wall ({args.tokens - 1} steps, {args.threads} threads)")
        return
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    prompt_runs = 1 if args.genai else -(-len(ids) // lm.graph.prefill_chunk)  # a long prompt runs in chunks
    prefill_end = runs[prompt_runs - 1][0] + runs[prompt_runs - 1][1]
    by_node: collections.Counter = collections.Counter()
    step_by_op: collections.Counter = collections.Counter()
    op_of = {}
    step_kernels = 0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            by_node[node] += e["dur"]
            op_of[node] = e["args"].get("op_name")
            if e["ts"] > prefill_end:
                step_kernels += e["dur"]
                step_by_op[op_of[node]] += e["dur"]
    steps = len(runs) - prompt_runs
    print(f"decode step after {len(ids)} prompt tokens: {1000 * step_seconds:.2f} ms wall, "
          f"{np.mean([d for _, d in runs[prompt_runs:]]) / 1000:.2f} ms in onnxruntime's run, "
          f"{step_kernels / steps / 1000:.2f} ms of kernels ({steps} steps): "
          + ", ".join(f"{op} {us / steps / 1000:.2f}" for op, us in step_by_op.most_common(4)) + " ms")
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


def _genai_loop(session: ort.InferenceSession, folder: Path, ids: list[int], tokens: int) -> float:
    """Prefill IDS and decode TOKENS greedily through onnxruntime-genai's graph as genai runs it; seconds per step."""
    config = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    layers, heads, size = config["num_hidden_layers"], config["num_key_value_heads"], config["head_size"]
    config_vocab = json.loads((folder / "genai_config.json").read_text())["model"]["vocab_size"]
    capacity = len(ids) + tokens + 1
    binding = session.io_binding()
    for layer in range(layers):  # past_present_share_buffer: one max-length buffer per name pair
        for kind in ("key", "value"):
            buffer = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, heads, capacity, size), dtype=np.float32))
            binding.bind_ortvalue_input(f"past_key_values.{layer}.{kind}", buffer)
            binding.bind_ortvalue_output(f"present.{layer}.{kind}", buffer)

    def run(feed: list[int], total: int) -> int:
        logits = np.empty((1, len(feed), config_vocab), dtype=np.float32)  # genai's graph returns every position
        binding.bind_cpu_input("input_ids", np.asarray([feed], dtype=np.int64))
        binding.bind_cpu_input("attention_mask", np.ones((1, total), dtype=np.int64))
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        session.run_with_iobinding(binding)
        return int(np.argmax(logits[0, -1]))

    token = run(ids, len(ids))
    started = time.perf_counter()
    for step in range(1, tokens):
        token = run([token], len(ids) + step)
    return (time.perf_counter() - started) / (tokens - 1)


if __name__ == "__main__":
    main()
