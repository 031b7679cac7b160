"""ModernBERT: rotary positions, global attention every n-th layer and local windows between, GeGLU,
no biases, no token types (the padded path; the graph takes the same inputs as BERT's)."""

from edgelm.export.families.bert import bert_shaped

FAMILY = bert_shaped("modernbert", ("modernbert",))
