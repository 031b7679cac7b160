"""Gemma 3 run as an encoder (EmbeddingGemma): the decoder body with bidirectional attention, its sliding
windows and local/global rope bases as transformers computes them, pooled by sentence-transformers."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("gemma3-embedding", ("gemma3_text",), tasks=("feature-extraction",),
                     requires=(("use_bidirectional_attention", True),))
