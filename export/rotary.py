"""Rotary cos/sin tables, computed by the checkpoint's own rotary module.

Calling transformers' module (rather than re-deriving the frequencies) reproduces every rope
variant it implements exactly: scaling types, attention factors, partial rotary, and a table per
layer type where the module takes one (Gemma 3: a local and a global base). Two variants depend on
the sequence length:

- LongRoPE (Phi-3.5, Phi-4-mini) switches every position's frequencies from the short factors to
  the long ones once the sequence is longer than original_max_position_embeddings, and
  transformers' generate then runs the whole sequence again (Phi3ForCausalLM.prepare_inputs_for_
  generation drops the cache), so every cached key is rotated with the long factors. The graph
  stores two tables: [short below the switch, long from it] for single-token calls (each row's new
  position picks its own: rows of a batch on either side of the switch stay exact), and long
  everywhere for a call of several tokens whose longest row is past the switch. The runtime runs a
  row's whole sequence again when it crosses the switch (runtime/kv_cache.py, manifest
  kv_cache.rope_switch), as transformers does.
- Dynamic NTK rescales the frequencies by the current length on every call, which a precomputed
  table cannot follow exactly: it is refused.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgelm.errors import ExportError

LONG_ROPE = "longrope"


@dataclass(frozen=True)
class RotaryTables:
    dims: int  # dimensions rotated per head
    tables: dict[str | None, tuple[np.ndarray, np.ndarray]]  # layer type (None: every layer) -> cos, sin (rows, dims / 2)
    switch: int | None = None  # LongRoPE: the length past which the long factors apply (tables then hold 2 x rows)


def rope_parameters(config: Any, layer_type: str | None = None) -> dict:
    """The rope settings of CONFIG (transformers 5's rope_parameters, or rope_scaling), per layer type if split."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return dict(params.get(layer_type, params) if layer_type else params)


def rotary_tables(model: Any, module_name: str, config: Any, positions: int) -> RotaryTables:
    """Tables for POSITIONS positions from MODEL's rotary module MODULE_NAME."""
    try:
        module = model.get_submodule(module_name)
    except AttributeError as e:
        raise ExportError(f"the checkpoint has no rotary module {module_name}; its layout does not match the family") from e
    per_type = "layer_type" in inspect.signature(module.forward).parameters
    layer_types = sorted(set(config.layer_types)) if per_type else [None]
    tables, switch = {}, None
    for layer_type in layer_types:
        params = rope_parameters(config, layer_type)
        kind = params.get("rope_type", params.get("type", "default"))
        if kind == "dynamic":
            raise ExportError("rope scaling 'dynamic' rescales the frequencies with the sequence length, which a "
                              "precomputed table cannot follow exactly; export a checkpoint without it")
        original = params.get("original_max_position_embeddings") or getattr(config, "original_max_position_embeddings", 0)
        if kind == LONG_ROPE and positions > int(original):
            switch = int(original)
            short, long = _call(module, switch, layer_type), _call(module, positions, layer_type)
            # rows 0..P-1: short below the switch, long from it (what one new token at any position reads);
            # rows P..2P-1: long everywhere (what a call of several tokens past the switch reads)
            tables[layer_type] = tuple(np.concatenate([s, l[switch:], l]) for s, l in zip(short, long))
        else:
            tables[layer_type] = _call(module, positions, layer_type)
    dims = 2 * next(iter(tables.values()))[0].shape[1]
    return RotaryTables(dims, tables, switch)


def _call(module: Any, positions: int, layer_type: str | None) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (positions, rotary / 2) for positions 0..POSITIONS-1 (rotate-half layout)."""
    import torch

    ids = torch.arange(positions, dtype=torch.int64)[None]
    extra = (layer_type,) if layer_type is not None else ()
    with torch.no_grad():
        cos, sin = module(torch.zeros(1, dtype=torch.float32), ids, *extra)  # (1, positions, rotary)
    cos, sin = cos[0].float().numpy(), sin[0].float().numpy()
    half = cos.shape[-1] // 2
    if not np.array_equal(cos[:, :half], cos[:, half:]):
        raise ExportError("this checkpoint's rotary embedding is interleaved, which the fused graph does not support")
    return np.ascontiguousarray(cos[:, :half]), np.ascontiguousarray(sin[:, :half])
