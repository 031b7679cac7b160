"""DeBERTa-v2 / v3: disentangled attention (content-to-position and position-to-content terms over bucketed
relative positions), no absolute positions in v3, no token types (type_vocab_size 0)."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("deberta-v2", ("deberta-v2",))
