"""DistilBERT: BERT without token type ids, with its own config key names."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("distilbert", ("distilbert",), num_layers=("n_layers", "num_hidden_layers"),
                     num_heads=("n_heads", "num_attention_heads"), hidden_size=("dim", "hidden_size"))
