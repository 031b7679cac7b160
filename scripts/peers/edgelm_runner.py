"""edgelm runner (run with the project's venv python; see common.py for the job).

The job's model is a bundle folder; it runs on the CPU provider with the job's threads.
Generation is greedy and forced to full length (no eos); a batch is one generator over all
rows (the runtime pads them itself). Perplexity is one teacher-forced forward pass.
"""

from __future__ import annotations

import sys

import numpy as np

import common


# -- every edgelm-specific call lives in this block (adapt here when the runtime changes) --------
def open_model(job: dict):
    """The bundle through the public API, on the CPU with the job's threads."""
    from edgelm.runtime import load

    return load(job["model"], provider="cpu", threads=job["threads"])


def make_generator(lm, max_new_tokens: int):
    """A greedy generator that ignores eos, so every row makes exactly max_new_tokens."""
    from edgelm.runtime.generator import Generator

    return Generator(lm.graph, lm.params(max_new_tokens=max_new_tokens, temperature=0.0),
                     lm.manifest.max_context, eos=(), pad=lm.manifest.special_tokens.pad)


def full_logits(lm, ids: list[int]) -> np.ndarray:
    """(len(ids), vocab) logits of IDS run as one prompt from an empty cache (teacher forcing)."""
    return lm.graph.score(ids)


def describe(lm) -> str:
    import onnxruntime

    import edgelm

    version = getattr(edgelm, "__version__", "?")
    return f"edgelm {version} (onnxruntime {onnxruntime.__version__}, provider {lm.provider})"
# -----------------------------------------------------------------------------------------------


def generate(lm, rows: list[list[int]], n: int) -> common.Run:
    """Prefill all rows at once, then one token per row per step (onnxruntime-genai's loop shape)."""
    clock = common.Clock()
    gen = make_generator(lm, n)  # inside the clock, as og.Generator is for onnxruntime-genai
    gen.append_tokens(rows)  # prefill
    gen.generate_next_token()
    clock.first()
    while not gen.is_done():
        gen.generate_next_token()
    return clock.run([gen.get_new_tokens(i) for i in range(len(rows))])


def teacher_forced_logits(lm, ids: list[int]) -> np.ndarray:
    return full_logits(lm, ids)


def prepare(job: dict) -> str:
    """Bundles are given on the command line: nothing to convert."""
    return job["model"]


if __name__ == "__main__":
    common.main(sys.modules[__name__])
