"""What a model family declaration says, and the generic code that reads it.

A family states only how it differs: which config keys hold its sizes (aliases spelled out,
first match wins), whether its graph takes position ids or token type ids, how many position
slots it reserves, its default pooling, and the tasks it supports. A decoder family also says
how its layers are built (`DecoderLayers`: norm and MLP kind, where each weight lives in the
checkpoint, and its own block function where its wiring differs), which export/decoder_graph.py reads. Generic code calls the methods below and
never branches on model_type.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from edgelm.errors import ExportError
from edgelm.runtime.kv_layout import KVLayout


class Kind(str, Enum):
    DECODER = "decoder"
    ENCODER = "encoder"


@dataclass(frozen=True)
class DecoderLayers:
    """How a decoder family's fused graph is built from its checkpoint.

    `weights` maps a role to the checkpoint's module name (`{i}` = layer index); a module's
    `.weight` and optional `.bias` are read. Roles: embed, final_norm, lm_head, attn_norm, o,
    mlp_norm, down, up, and either qkv (one packed projection) or q, k, v; gated MLPs add gate (or
    a packed gate_up); q_norm and k_norm normalise q and k; a block of its own may read more (Gemma 2's
    post norms). `embed`, `block` and `logits` are the family's own wiring where it differs from
    Llama's (export/decoder_blocks.py has their signatures and the defaults).
    """

    weights: dict[str, str]
    norm: str = "rms"  # "rms" | "layer"
    mlp: str = "gated"  # "gated": down(act(gate(x)) * up(x)) | "plain": down(act(up(x)))
    linear: str = "out_in"  # torch.nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out)
    activation: tuple[str, ...] = ("hidden_act",)  # config keys naming the MLP activation
    norm_epsilon: tuple[str, ...] = ("rms_norm_eps",)
    norm_offset: float = 0.0  # Gemma's norms scale by (1 + w): 1.0
    sliding_window: tuple[str, ...] = ("sliding_window",)  # config keys of a local attention window
    rotary: str | None = "model.rotary_emb"  # the module computing (cos, sin); None: no rotary positions
    embed: Callable[..., Any] | None = None  # (Model) -> Residual; default: the token embedding
    block: Callable[..., Any] | None = None  # (Layer, Residual) -> Residual; default: pre-norm attention + MLP
    logits: Callable[..., Any] | None = None  # (Model, Residual) -> logits; default: final norm + LM head


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    model_types: tuple[str, ...]
    tasks: tuple[str, ...]
    num_layers: tuple[str, ...]
    num_heads: tuple[str, ...]
    hidden_size: tuple[str, ...]
    max_positions: tuple[str, ...]
    num_kv_heads: tuple[str, ...] = ()  # none found -> same as num_heads (no GQA)
    head_size: tuple[str, ...] = ()  # none found -> hidden_size // num_heads
    token_type_ids: bool = False  # encoder graph may take token_type_ids
    reserved_positions: int = 0  # RoBERTa keeps padding_idx + 1 slots out of the table
    pooling: str = "mean"  # sentence pooling when the checkpoint does not say
    decoder: DecoderLayers | None = None  # decoders: how the fused graph is built
    # (config key, value) pairs this family needs, for a model_type that several families share
    # (gemma3_text is a decoder, or an encoder when its attention is bidirectional)
    requires: tuple[tuple[str, Any], ...] = ()

    def accepts(self, config: dict[str, Any]) -> bool:
        return all(config.get(key) == value for key, value in self.requires)

    def hparam(self, config: Any, names: tuple[str, ...], default: Any = None) -> Any:
        """First of NAMES set on CONFIG (llama.cpp's find_hparam)."""
        for name in names:
            value = getattr(config, name, None)
            if value is not None:
                return value
        if default is not None:
            return default
        raise ExportError(f"{self.name} config has none of {', '.join(names)}; the checkpoint's config.json is incomplete")

    def kv_layout(self, config: Any) -> KVLayout:
        heads = self.hparam(config, self.num_heads)
        hidden = self.hparam(config, self.hidden_size)
        return KVLayout(
            num_layers=self.hparam(config, self.num_layers),
            num_kv_heads=self.hparam(config, self.num_kv_heads, default=heads) if self.num_kv_heads else heads,
            head_size=self.hparam(config, self.head_size, default=hidden // heads) if self.head_size else hidden // heads,
        )

    def max_context(self, config: Any) -> int:
        return int(self.hparam(config, self.max_positions)) - self.reserved_positions
