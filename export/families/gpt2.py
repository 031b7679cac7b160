"""GPT-2 family (gpt2, distilgpt2): learned positions, one KV head per query head, LayerNorm, GELU MLP."""

from edgelm.export.decoder_blocks import Model, Residual, Term
from edgelm.export.families.base import DecoderLayers, Family, Kind


def embed(model: Model) -> Residual:
    """Token embedding plus the learned position table (added by the first layer's skip-norm)."""
    table = model.g.const("model.embed_positions.weight", model.weights.array("positions"))
    positions = model.g.op("Gather", "/model/embed_positions/Gather", [table, model.position_ids()])
    return Residual(model.tokens()).add(Term(positions))


FAMILY = Family(
    name="gpt2",
    kind=Kind.DECODER,
    model_types=("gpt2",),
    tasks=("text-generation",),
    num_layers=("n_layer", "num_hidden_layers"),
    num_heads=("n_head", "num_attention_heads"),
    hidden_size=("n_embd", "hidden_size"),
    max_positions=("n_positions", "max_position_embeddings"),
    decoder=DecoderLayers(
        norm="layer",
        mlp="plain",
        weights={
            "embed": "transformer.wte", "positions": "transformer.wpe", "final_norm": "transformer.ln_f",
            "lm_head": "lm_head", "attn_norm": "transformer.h.{i}.ln_1", "qkv": "transformer.h.{i}.attn.c_attn",
            "o": "transformer.h.{i}.attn.c_proj", "mlp_norm": "transformer.h.{i}.ln_2",
            "up": "transformer.h.{i}.mlp.c_fc", "down": "transformer.h.{i}.mlp.c_proj",
        },
        linear="in_out",  # Conv1D
        activation=("activation_function",),
        norm_epsilon=("layer_norm_epsilon",),
        sliding_window=(),
        rotary=None,
        embed=embed,
    ),
)
