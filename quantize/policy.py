"""Which nodes stay in float: an explicit exclude list, from presets or node-name patterns.

    --keep-float lm_head            a preset (names below)
    --keep-float '*/mlp/down_proj/*' an fnmatch pattern on node names

A pattern that matches no node is an error that shows what node names look like, so a typo
never silently quantizes what the user meant to keep.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from edgelm.errors import QuantizeError

# Presets over the node names export gives, as optimum does (/lm_head/MatMul, /model/embed_tokens/Gather, ...).
PRESETS = {
    "lm_head": ("*lm_head*",),
    "embeddings": ("*embed_tokens*", "*embeddings*", "*wte*"),
    "attention": ("*attn*", "*attention*"),
    "mlp": ("*mlp*", "*intermediate*", "*/output/dense*"),
}


def nodes_to_keep(node_names: list[str], requested: tuple[str, ...]) -> list[str]:
    """Names of the nodes that REQUESTED presets/patterns select; every entry must select one."""
    keep, unmatched = [], []
    for entry in requested:
        patterns = PRESETS.get(entry, (entry,))
        hits = [n for n in node_names if any(fnmatchcase(n, p) for p in patterns)]
        if hits:
            keep.extend(hits)
        else:
            unmatched.append(entry)
    if unmatched:
        raise QuantizeError(f"--keep-float {', '.join(unmatched)} matches no node; use a preset "
                            f"({', '.join(PRESETS)}) or an fnmatch pattern on node names such as {_sample(node_names)}")
    return sorted(set(keep))


def _sample(node_names: list[str]) -> str:
    matmuls = [n for n in node_names if n.endswith("MatMul")]
    return ", ".join((matmuls or node_names)[:2])
