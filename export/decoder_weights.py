"""A decoder checkpoint's weights by role, in the layout the fused graph wants.

The family declaration (`DecoderLayers.weights`) names each role's module; this reads its
`.weight` and optional `.bias` from the torch model, turns projections into (in, out) matrices
for MatMul and packs Q/K/V (and gate/up) side by side so each is one MatMul. Rotary tables come
from export/rotary.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgelm.errors import ExportError
from edgelm.export.families.base import DecoderLayers


class DecoderWeights:
    """Role -> numpy arrays (float32) of one torch decoder."""

    def __init__(self, model: Any, layers: DecoderLayers):
        self.model = model
        self.layers = layers
        self.params = dict(model.named_parameters(remove_duplicate=False))
        self.params.update(dict(model.named_buffers()))

    def has(self, role: str) -> bool:
        return role in self.layers.weights

    def _tensor(self, role: str, layer: int | None, part: str) -> Any | None:
        module = self.layers.weights[role].format(i=layer)
        return self.params.get(f"{module}.{part}")

    def array(self, role: str, layer: int | None = None, part: str = "weight") -> np.ndarray | None:
        tensor = self.weight_tensor(role, layer) if part == "weight" else self._tensor(role, layer, part)
        return None if tensor is None else tensor.detach().float().numpy().copy()

    def linear(self, *roles: str, layer: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """ROLES' projections side by side: W (in, sum of outs) and bias (sum of outs,) or None."""
        matrices, biases = [], []
        for role in roles:
            w = self.array(role, layer)
            matrices.append(w.T if self.layers.linear == "out_in" else w)  # -> (in, out)
            biases.append(self.array(role, layer, "bias"))
        if all(b is None for b in biases):
            bias = None
        else:
            bias = np.concatenate([b if b is not None else np.zeros(m.shape[1], np.float32) for m, b in zip(matrices, biases)])
        return np.ascontiguousarray(np.concatenate(matrices, axis=1)), bias

    def norm(self, role: str, layer: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(gamma, beta or None) of a normalisation; gamma includes the family's offset (Gemma stores w for 1 + w)."""
        gamma = self.array(role, layer)
        if self.layers.norm_offset:
            gamma = gamma + np.float32(self.layers.norm_offset)
        return gamma, self.array(role, layer, "bias")

    def lm_head_is_embedding(self) -> bool:
        """True when the LM head is the input embedding (tied): the graph then stores it once."""
        head, embed = self.weight_tensor("lm_head"), self.weight_tensor("embed")
        return head is embed or head.data_ptr() == embed.data_ptr()

    def weight_tensor(self, role: str, layer: int | None = None) -> Any:
        """ROLE's weight tensor as the model holds it (a tied LM head is the embedding's own Parameter)."""
        tensor = self._tensor(role, layer, "weight")
        if tensor is None:
            module = self.layers.weights[role].format(i=layer)
            raise ExportError(f"the checkpoint has no {module}.weight ({role}); its layout does not match the family declaration")
        return tensor
