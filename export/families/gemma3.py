"""Gemma 3 (text, causal): Gemma 2's block with per-head q/k norms, a local and a global rope base
(one rotary table per layer type) and no soft-capping. From safetensors folders or GGUF files, which
transformers reads as gemma3_text. EmbeddingGemma shares the model_type with bidirectional attention:
that checkpoint is the gemma3-embedding encoder family."""

from edgelm.export.families import gemma2
from edgelm.export.families.gemma import scaled_embedding
from edgelm.export.families.llama import QK_NORMS, llama_shaped

FAMILY = llama_shaped("gemma3", ("gemma3_text",), weights={**gemma2.WEIGHTS, **QK_NORMS}, norm_offset=1.0,
                      activation=("hidden_activation",), embed=scaled_embedding, block=gemma2.block, logits=gemma2.logits)
