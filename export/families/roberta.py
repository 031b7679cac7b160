"""RoBERTa and its aliases (XLM-RoBERTa, CamemBERT): BERT whose position table reserves padding_idx + 1
slots (514 -> 512 tokens), without token types."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("roberta", ("roberta", "xlm-roberta", "camembert"), reserved_positions=2)
