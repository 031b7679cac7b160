"""Qwen3: Llama's layout plus an RMSNorm over each head of q and k before rotary (the q/k norm
weights are one head long, which the attention builder reads as per-head). Windows on some layers
only come from config.layer_types, as for Qwen2's max_window_layers."""

from edgelm.export.families.llama import QK_NORMS, llama_shaped

FAMILY = llama_shaped("qwen3", ("qwen3",), weights=QK_NORMS)
