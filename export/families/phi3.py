"""Phi-3 / Phi-3.5 / Phi-4-mini: Llama's math with q, k, v packed in one projection and gate, up in
another; partial rotary and LongRoPE come from the checkpoint's rotary module (export/rotary.py)."""

from edgelm.export.families.llama import LAYER, llama_shaped

FAMILY = llama_shaped("phi3", ("phi3",), weights={
    "qkv": f"{LAYER}.self_attn.qkv_proj", "q": None, "k": None, "v": None,
    "gate_up": f"{LAYER}.mlp.gate_up_proj", "gate": None, "up": None,
})
