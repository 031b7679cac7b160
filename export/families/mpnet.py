"""MPNet: relative position bias in every attention layer (traced as transformers computes it), positions
offset by padding_idx + 1 as RoBERTa's (514 -> 512 tokens), no token types."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("mpnet", ("mpnet",), reserved_positions=2)
