"""The MatMuls a rounding pass works on: those whose B input is a 2-D initializer (a weight, not an activation).

Range clipping, int4-mixed's sensitivities and GPTQ each choose from these, with their own further conditions.
"""

from __future__ import annotations

from typing import Any


def weight_matmuls(model: Any) -> list[tuple[Any, Any]]:
    """(node, weight initializer) of every MatMul of MODEL whose B is a 2-D initializer, in graph order."""
    inits = {i.name: i for i in model.graph.initializer}
    return [(n, inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def gated_product_matmuls(model: Any) -> list[str]:
    """Names of the weight MatMuls whose input is a product (a gated MLP's down projection: act(gate) * up)."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    return [n.name for n, _ in weight_matmuls(model)
            if n.input[0] in producer and producer[n.input[0]].op_type == "Mul"]
