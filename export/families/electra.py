"""ELECTRA: BERT with a smaller embedding projected up to the hidden size; token types as BERT's."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("electra", ("electra",), token_type_ids=True)
