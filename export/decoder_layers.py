"""The operators of a fused decoder graph, each a small builder over GraphBuilder.

The fused operators are onnxruntime's (com.microsoft): GroupQueryAttention (attention with
rotary inside it and a KV cache updated in place), Skip[Simplified]LayerNormalization
(residual add + norm), QuickGelu / FastGelu (activations). onnxruntime-genai's model builder
emits the same operators. These functions know nothing of model families: how a family wires
them is its block function (export/decoder_blocks.py and export/families/).
"""

from __future__ import annotations

import numpy as np

from edgelm.errors import ExportError
from edgelm.export.graph_builder import MS_DOMAIN, GraphBuilder

# HF activation name -> (operator, domain, attributes); FastGelu also takes the bias.
ACTIVATIONS = {
    "silu": ("QuickGelu", MS_DOMAIN, {"alpha": 1.0}),  # x * sigmoid(1.0 * x)
    "swish": ("QuickGelu", MS_DOMAIN, {"alpha": 1.0}),
    "gelu_new": ("FastGelu", MS_DOMAIN, {}),  # tanh approximation
    "gelu_pytorch_tanh": ("FastGelu", MS_DOMAIN, {}),
    "gelu_fast": ("FastGelu", MS_DOMAIN, {}),
    "gelu": ("Gelu", MS_DOMAIN, {}),  # exact (erf)
    "relu": ("Relu", "", {}),
}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ExportError(f"activation {name!r} is not supported by the fused graph; supported: {', '.join(sorted(ACTIVATIONS))}")


def linear(g: GraphBuilder, name: str, x: str, weight: np.ndarray, bias: np.ndarray | None = None) -> str:
    """x (.., in) ─> MatMul(W (in, out)) [─> Add(b)] ─> (.., out)"""
    y = g.op("MatMul", f"{name}/MatMul", [x, g.const(f"{name}.weight", weight)])
    return g.op("Add", f"{name}/Add", [y, g.const(f"{name}.bias", bias)]) if bias is not None else y


def norm(g: GraphBuilder, name: str, kind: str, epsilon: float, gamma: np.ndarray, beta: np.ndarray | None,
         x: str, skip: str | None = None, bias: np.ndarray | None = None) -> tuple[str, str]:
    """A norm that may also add to the residual stream; returns (normed, residual).

        x ─────────────────────────────> [Simplified]LayerNormalization ─> normed     (residual = x)
        x, skip [, bias] ─> Skip[Simplified]LayerNormalization ─┬─> normed
                                                                 └─> residual = x + skip + bias
    """
    params = [g.const(f"{name}.weight", gamma)] + ([g.const(f"{name}.bias", beta)] if kind == "layer" else [])
    if skip is None:
        op = "SimplifiedLayerNormalization" if kind == "rms" else "LayerNormalization"
        return g.op(op, f"{name}/{op}", [x, *params], axis=-1, epsilon=epsilon), x
    op = "SkipSimplifiedLayerNormalization" if kind == "rms" else "SkipLayerNormalization"
    extra = [g.const(f"{name}.skip_bias", bias)] if bias is not None else []
    out = f"{name}/{op}"
    normed, _, _, residual = g.op(op, out, [x, skip, *params, *extra], [f"{out}/output_0", "", "", f"{out}/output_3"],
                                  domain=MS_DOMAIN, epsilon=epsilon)
    return normed, residual


def head_norm(g: GraphBuilder, name: str, x: str, gamma: np.ndarray, epsilon: float, heads: int, head_size: int) -> str:
    """RMSNorm of q or k: over each head when GAMMA is one head long (Qwen3, Gemma 3), else over all heads (OLMo 2).

        x (B, S, heads * head) ─> Reshape (B, S, heads, head) ─> SimplifiedLayerNormalization ─> Reshape (B, S, heads * head)
    """
    weight = g.const(f"{name}.weight", gamma)
    if gamma.shape[0] != head_size:
        return g.op("SimplifiedLayerNormalization", f"{name}/SimplifiedLayerNormalization", [x, weight], axis=-1, epsilon=epsilon)
    split = g.op("Reshape", f"{name}/Reshape", [x, g.const(f"{name}/heads", np.array([0, 0, heads, head_size], np.int64))])
    normed = g.op("SimplifiedLayerNormalization", f"{name}/SimplifiedLayerNormalization", [split, weight], axis=-1, epsilon=epsilon)
    return g.op("Reshape", f"{name}/Reshape_1", [normed, g.const(f"{name}/flat", np.array([0, 0, -1], np.int64))])


def group_query_attention(g: GraphBuilder, name: str, qkv: list[str], cache: tuple[str, str, str, str],
                          lengths: tuple[str, str], rotary: tuple[str, str] | None, heads: int, kv_heads: int,
                          window: int | None, scale: float | None, softcap: float | None) -> str:
    """Causal self-attention with the KV cache updated in place; returns the attended heads (B, S, heads * head).

        qkv (packed) or q, k, v; past_k, past_v; seqlens_k, total_length [; cos, sin]
            ─> GroupQueryAttention ─┬─> (B, S, heads * head)
                                    └─> present_k, present_v  (the same buffers as past_k, past_v)
    """
    past_k, past_v, present_k, present_v = cache
    cos_sin = list(rotary) if rotary else ["", ""]
    attributes = {"scale": float(scale)} if scale else {}
    if softcap:
        attributes["softcap"] = float(softcap)
    inputs = qkv + [""] * (3 - len(qkv))
    attended, _, _ = g.op("GroupQueryAttention", f"{name}/GroupQueryAttention",
                          [*inputs, past_k, past_v, *lengths, *cos_sin],
                          [f"{name}/GroupQueryAttention/output_0", present_k, present_v], domain=MS_DOMAIN,
                          num_heads=heads, kv_num_heads=kv_heads, do_rotary=int(rotary is not None), rotary_interleaved=0,
                          local_window_size=window if window else -1, **attributes)
    return attended


def mlp(g: GraphBuilder, name: str, x: str, kind: str, activation: str, up: tuple[np.ndarray, np.ndarray | None],
        down: tuple[np.ndarray, np.ndarray | None]) -> tuple[str, np.ndarray | None]:
    """The feed-forward block; returns (output before its bias, that bias).

        gated:  x ─> MatMul(W_gate|W_up) [+ b] ─> Split ─> act(gate) * up ─> MatMul(W_down)
        plain:  x ─> MatMul(W_up) ─> act(. + b_up) ─> MatMul(W_down)
    """
    op, domain, attributes = ACTIVATIONS[activation]
    w_up, b_up = up
    if kind == "gated":
        both = linear(g, f"{name}/gate_up_proj", x, w_up, b_up)
        half = w_up.shape[1] // 2
        gate, value = g.op("Split", f"{name}/Split", [both, g.const(f"{name}/split", np.array([half, half], np.int64))],
                           2, axis=-1)
        hidden = g.op("Mul", f"{name}/Mul", [g.op(op, f"{name}/act/{op}", [gate], domain=domain, **attributes), value])
    else:
        projected = linear(g, f"{name}/up_proj", x, w_up)
        bias = [g.const(f"{name}/up_proj.bias", b_up)] if b_up is not None else []
        if bias and op != "FastGelu":
            projected, bias = g.op("Add", f"{name}/up_proj/Add", [projected, *bias]), []
        hidden = g.op(op, f"{name}/act/{op}", [projected, *bias], domain=domain, **attributes)
    return linear(g, f"{name}/down_proj", hidden, down[0]), down[1]


def lm_head(g: GraphBuilder, x: str, keep: str, weight: np.ndarray | None, bias: np.ndarray | None,
            embedding: str) -> str:
    """Logits of the last KEEP positions (all when KEEP is 0).

        x (B, S, H) ─> Slice(-keep:) ─> (B, K, H) ─> MatMul(W_head or Transpose(embedding)) [+ b] ─> logits (B, K, V)
    A tied head reads the embedding through a Transpose, so the matrix is stored once.
    """
    start = g.op("Neg", "/logits_to_keep/Neg", [keep])
    end = g.const("/logits_to_keep/end", np.array([np.iinfo(np.int64).max], np.int64))
    axis = g.const("/logits_to_keep/axis", np.array([1], np.int64))
    kept = g.op("Slice", "/logits_to_keep/Slice", [x, start, end, axis])
    if weight is None:
        weight_name = g.op("Transpose", "/lm_head/Transpose", [embedding], perm=[1, 0])  # (H, V)
    else:
        weight_name = g.const("lm_head.weight", weight)
    logits = g.op("MatMul", "/lm_head/MatMul", [kept, weight_name])
    return g.op("Add", "/lm_head/Add", [logits, g.const("lm_head.bias", bias)]) if bias is not None else logits
