"""What a decoder family writes its wiring with: the residual stream, a layer's builders, and the
Llama-shaped defaults.

A family's module may give three functions (export/families/base.py `DecoderLayers`); each reads
like the model's forward in transformers or mlx-lm, over builders that emit fused operators:

    embed(model) -> Residual                         the token embedding (scaled, plus positions...)
    block(layer, h: Residual) -> Residual            one decoder layer
    logits(model, h: Residual) -> str                final norm, LM head (softcap, scaling...)

The Llama-shaped ones below are the defaults, so a Llama clone is a declaration. The residual
stream is kept lazy: `h.add(term)` records a branch's output (and its projection's bias) and the
next norm adds it with one fused Skip[Simplified]LayerNormalization, whatever order a family
writes its norms in (pre-norm, post-norm, both, parallel branches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelm.export import decoder_layers as ops
from edgelm.export.decoder_weights import DecoderWeights
from edgelm.export.graph_builder import GraphBuilder
from edgelm.export.head_layout import HeadLayout
from edgelm.export.rotary import RotaryTables
from edgelm.runtime.kv_layout import POSITION_IDS, BATCH, SEQUENCE


@dataclass(frozen=True)
class Term:
    """A branch's output waiting to be added to the residual stream, with its projection's bias."""

    name: str
    bias: np.ndarray | None = None


@dataclass(frozen=True)
class Residual:
    """The residual stream: a tensor plus the terms not yet added to it."""

    base: str
    terms: tuple[Term, ...] = ()

    def add(self, term: Term) -> "Residual":
        return Residual(self.base, self.terms + (term,))


class Model:
    """The graph being built and what every layer shares: weights, config, rotary tables, cache lengths."""

    def __init__(self, g: GraphBuilder, weights: DecoderWeights, spec: Any, config: Any, hparams: dict[str, Any],
                 heads: HeadLayout, rotary: dict[str | None, tuple[str, str]] | None, shared: dict[str, Any]):
        self.g, self.weights, self.spec, self.config = g, weights, spec, config
        self.num_heads, self.num_kv_heads = hparams["heads"], hparams["kv_heads"]
        self.epsilon, self.activation = hparams["epsilon"], hparams["activation"]
        self.heads = heads
        self.rotary = rotary  # layer type -> (cos, sin) graph names; None without rotary positions
        self.input_ids, self.keep, self.lengths, self.cache = (shared[k] for k in ("input_ids", "keep", "lengths", "cache"))
        self._embedding: str | None = None
        self._count = 0

    def unique(self, name: str) -> str:
        self._count += 1
        return f"{name}_{self._count}"

    # -- embedding ---------------------------------------------------------------------------
    def embedding(self) -> str:
        """The token embedding table (V, H), stored once (a tied LM head reads it too)."""
        if self._embedding is None:
            self._embedding = self.g.const("model.embed_tokens.weight", self.weights.array("embed"))
        return self._embedding

    def tokens(self) -> str:
        """input_ids looked up in the embedding (B, S, H)."""
        return self.g.op("Gather", "/model/embed_tokens/Gather", [self.embedding(), self.input_ids])

    def position_ids(self) -> str:
        """The position_ids input, declared for families whose positions are a learned table."""
        return self.g.input(POSITION_IDS, np.int64, [BATCH, SEQUENCE])

    def scale(self, x: str, factor: float, name: str) -> str:
        return self.g.op("Mul", f"{name}/Mul", [x, self.g.const(f"{name}/factor", np.array(factor, np.float32))])

    # -- the residual stream -----------------------------------------------------------------
    def _pending(self, terms: tuple[Term, ...], name: str) -> tuple[str | None, np.ndarray | None]:
        """TERMS as one tensor (Add nodes when there are several) and their biases summed (None when they have none)."""
        total = None
        for term in terms:
            total = term.name if total is None else self.g.op("Add", self.unique(f"{name}/branches/Add"), [total, term.name])
        biases = [t.bias for t in terms if t.bias is not None]
        return total, (np.sum(biases, axis=0).astype(np.float32) if biases else None)

    def value(self, x: Residual | Term, name: str) -> str:
        """X's tensor, its pending terms and biases added (Add nodes)."""
        if isinstance(x, Term):
            base, total, bias = x.name, None, x.bias
        else:
            base, (total, bias) = x.base, self._pending(x.terms, name)
        if total is not None:
            base = self.g.op("Add", self.unique(f"{name}/Add"), [base, total])
        if bias is not None:
            base = self.g.op("Add", self.unique(f"{name}/Add"), [base, self.g.const(self.unique(f"{name}.bias"), bias)])
        return base

    def norm(self, name: str, role: str, x: Residual | Term, layer: int | None = None) -> tuple[str, Residual]:
        """Normalise X with the checkpoint's ROLE weights; returns (normed, X's stream with its terms added).

        With pending terms the add and the norm are one Skip*Normalization (several terms are summed first).
        """
        gamma, beta = self.weights.norm(role, layer)
        if isinstance(x, Term):
            x = Residual(self.value(x, name))
        skip, bias = self._pending(x.terms, name)
        normed, residual = ops.norm(self.g, name, self.spec.norm, self.epsilon, gamma, beta, x.base, skip, bias)
        return normed, Residual(residual)

    # -- output ------------------------------------------------------------------------------
    def lm_head(self, x: str) -> str:
        """Logits (B, K, V) of the last logits_to_keep positions of X."""
        if self.weights.lm_head_is_embedding():
            return ops.lm_head(self.g, x, self.keep, None, None, self.embedding())
        weight, bias = self.weights.linear("lm_head")
        return ops.lm_head(self.g, x, self.keep, weight, bias, self.embedding())

    def layer(self, index: int) -> "Layer":
        return Layer(self, index)


class Layer:
    """The builders of decoder layer INDEX: its norms, attention and MLP, read from its own weights."""

    def __init__(self, model: Model, index: int):
        self.model, self.index, self.config = model, index, model.config
        self.name = f"/model/layers.{index}"

    @property
    def layer_type(self) -> str | None:
        types = getattr(self.config, "layer_types", None)
        return types[self.index] if types else None

    def norm(self, role: str, x: Residual | Term) -> tuple[str, Residual]:
        return self.model.norm(f"{self.name}/{role}", role, x, self.index)

    def value(self, x: Residual | Term) -> str:
        return self.model.value(x, f"{self.name}/residual")

    def scaled(self, term: Term, factor: float) -> Term:
        """TERM times FACTOR (Granite's residual multiplier)."""
        name = self.model.scale(term.name, factor, self.model.unique(f"{self.name}/scaled"))
        return Term(name, None if term.bias is None else (term.bias * np.float32(factor)).astype(np.float32))

    def window(self) -> int | None:
        """The attention window (tokens attended, self included) of this layer, if it has one.

        transformers 5 names each layer's kind in config.layer_types; a config without them (Mistral)
        windows every layer. GroupQueryAttention's local_window_size is transformers' sliding_window
        (checked on a Mistral with a window of 5: the logits match at 5, and are far off at 4 and at 6).
        """
        config = self.config
        if getattr(config, "use_sliding_window", True) is False:
            return None
        window = next((getattr(config, k) for k in self.model.spec.sliding_window if getattr(config, k, None)), None)
        if window and self.layer_type is not None and self.layer_type != "sliding_attention":
            return None
        return int(window) if window else None

    def attention(self, x: str, *, scale: float | None = None, softcap: float | None = None, rotary: bool = True,
                  qkv: tuple[np.ndarray, np.ndarray | None] | None = None) -> Term:
        """Self-attention over the cache; returns the output projection's result (its bias pending).

        QKV overrides the packed projection (in, (heads + 2 kv_heads) * head) read from the q/k/v or qkv
        weights. q_norm / k_norm weights, when the family declares them, normalise q and k before rotary.
        SCALE defaults to 1/sqrt(the model's head size); ROTARY False skips rotary positions (NoPE layers).
        """
        m, i = self.model, self.index
        w, layout = m.weights, m.heads
        heads, kv_heads = m.num_heads, m.num_kv_heads
        if qkv is None:
            qkv = w.linear("qkv", layer=i) if w.has("qkv") else w.linear("q", "k", "v", layer=i)
        name = f"{self.name}/attn"
        parts = np.cumsum([heads * layout.size, kv_heads * layout.size])
        weights = [layout.columns(wp, bp, n) for wp, bp, n in zip(
            np.split(qkv[0], parts, axis=1), np.split(qkv[1], parts) if qkv[1] is not None else [None] * 3,
            (heads, kv_heads, kv_heads))]
        packed_w = np.concatenate([p[0] for p in weights], axis=1)
        packed_b = None if qkv[1] is None else np.concatenate([p[1] for p in weights])
        packed = ops.linear(m.g, f"{name}/qkv_proj", x, packed_w, packed_b)
        if w.has("q_norm"):
            size = layout.padded
            q, k, v = m.g.op("Split", f"{name}/Split", [packed, m.g.const(f"{name}/split", np.array(
                [heads * size, kv_heads * size, kv_heads * size], np.int64))], 3, axis=-1)
            q = self._head_norm("q_norm", q, heads)
            k = self._head_norm("k_norm", k, kv_heads)
            inputs = [q, k, v]
        else:
            inputs = [packed]
        tables = m.rotary[self.layer_type if self.layer_type in m.rotary else None] if rotary and m.rotary else None
        attended = ops.group_query_attention(m.g, name, inputs, m.cache[i], m.lengths, tables, heads, kv_heads,
                                             self.window(), scale if scale else layout.size ** -0.5, softcap)
        out_w, out_b = w.linear("o", layer=i)
        return Term(ops.linear(m.g, f"{name}/o_proj", attended, layout.rows(out_w, heads)), out_b)

    def _head_norm(self, role: str, x: str, heads: int) -> str:
        m = self.model
        gamma, _ = m.weights.norm(role, self.index)
        gamma, epsilon = m.heads.norm(gamma, m.epsilon)
        return ops.head_norm(m.g, f"{self.name}/attn/{role}", x, gamma, epsilon, heads, m.heads.padded)

    def mlp(self, x: str) -> Term:
        """The feed-forward block; returns its output (its bias pending)."""
        m, i, w = self.model, self.index, self.model.weights
        if m.spec.mlp == "gated":
            up = w.linear("gate_up", layer=i) if w.has("gate_up") else w.linear("gate", "up", layer=i)
        else:
            up = w.linear("up", layer=i)
        out, bias = ops.mlp(m.g, f"{self.name}/mlp", x, m.spec.mlp, m.activation, up, w.linear("down", layer=i))
        return Term(out, bias)


# -- the Llama-shaped defaults -------------------------------------------------------------------
def token_embedding(model: Model) -> Residual:
    return Residual(model.tokens())


def pre_norm_block(layer: Layer, h: Residual, **attention: Any) -> Residual:
    """h + attn(norm(h)), then h + mlp(norm(h)): Llama, Mistral, Qwen, GPT-2, Phi-3... ATTENTION goes to attention()."""
    x, h = layer.norm("attn_norm", h)
    h = h.add(layer.attention(x, **attention))
    x, h = layer.norm("mlp_norm", h)
    return h.add(layer.mlp(x))


def final_logits(model: Model, h: Residual) -> str:
    normed, _ = model.norm("/model/final_norm", "final_norm", h)
    return model.lm_head(normed)
