"""Write a float32 GGUF that computes exactly what a 4-bit Llama GGUF computes, but whose weights sit on no 4-bit grid.

    python scripts/dealign_gguf.py .models/SmolLM2-135M-Instruct.Q4_1.gguf /work/peers/smollm2-dealigned.F32.gguf

Why: the decoders on this machine come as 4-bit GGUFs (SmolLM2: Q4_1; Gemma 3 270M: Q4_K_M), and their "float"
weights, dequantized, lie exactly on a grid of 16 levels per block of 32 inputs (a float-minimum 4-bit scheme on
blocks of 32 reproduces SmolLM2's with zero error). A 4-bit quantizer that happens to use that grid (llama.cpp's
Q4_1, and nearly its Q4_K) looks far better on them than on a model trained in float; one that does not (an integer
zero point, SmoothQuant's rescaling) pays for re-rounding a rounded grid. Benchmarks of 4-bit quality on these
checkpoints measure that alignment as much as the quantizer.

What it does: every weight matrix's input channels are multiplied by random factors (log-uniform in [1/2, 2],
seeded) and the division folded where it is exact in float: into the RMSNorm weight before q/k/v and gate/up,
into v's output rows before o (per KV head channel, for every query head that reads it), into up's output rows
before down. The network computes the same function to float rounding; no block of any matrix keeps its grid.
The token embedding (Q8_0 in SmolLM2's file, tied to the LM head) is left as it is. Llama-architecture GGUFs only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spread", type=float, default=2.0, help="factors are log-uniform in [1/spread, spread] [2]")
    args = p.parse_args(argv)

    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(args.src))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        sys.exit(f"error: {args.src} is a {arch} GGUF; this script knows the llama layout only")
    heads = reader.fields["llama.attention.head_count"].contents()
    kv_heads = reader.fields["llama.attention.head_count_kv"].contents()
    tensors = {t.name: dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape.tolist())))
               for t in reader.tensors}  # (out, in) for matrices
    rng = np.random.default_rng(args.seed)
    factors = lambda n: np.exp(rng.uniform(-np.log(args.spread), np.log(args.spread), n)).astype(np.float32)  # noqa: E731
    layers = sorted({int(name.split(".")[1]) for name in tensors if name.startswith("blk.")})
    for i in layers:
        t = lambda name: f"blk.{i}.{name}.weight"  # noqa: E731
        a = factors(tensors[t("attn_norm")].size)  # hidden channels into q, k, v
        for name in ("attn_q", "attn_k", "attn_v"):
            tensors[t(name)] *= a[None, :]
        tensors[t("attn_norm")] /= a
        b = factors(tensors[t("ffn_norm")].size)  # hidden channels into gate, up
        for name in ("ffn_gate", "ffn_up"):
            tensors[t(name)] *= b[None, :]
        tensors[t("ffn_norm")] /= b
        v = tensors[t("attn_v")]  # (kv_heads * head, hidden)
        head = v.shape[0] // kv_heads
        c = factors(v.shape[0])  # v's output channels, read by o for every query head of their group
        tensors[t("attn_v")] = v / c[:, None]
        group = heads // kv_heads
        read = np.array([(m // head) // group * head + m % head for m in range(heads * head)])
        tensors[t("attn_output")] *= c[read][None, :]
        e = factors(tensors[t("ffn_up")].shape[0])  # the MLP's hidden channels: silu(gate) * up / e, down * e
        tensors[t("ffn_up")] /= e[:, None]
        tensors[t("ffn_down")] *= e[None, :]

    writer = gguf.GGUFWriter(str(args.dst), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_key_value(field.name, int(gguf.LlamaFileType.ALL_F32), gguf.GGUFValueType.UINT32)
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, tensors[t.name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.dst} ({args.dst.stat().st_size / 1e6:.0f} MB, {len(layers)} layers de-aligned)")


if __name__ == "__main__":
    main()
