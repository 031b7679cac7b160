"""CTranslate2 peer runner (run with the ct2 venv's python; see common.py for the job).

Models: `ct2-transformers-converter --model HF_DIR --output_dir WORK/ct2-Q --quantization Q`
for Q in float32 / int8, converted once. CTranslate2 takes token strings, not ids: the ids
are mapped through the converted model's own vocabulary.json (index = id), so it sees exactly
the ids the others see. Greedy (sampling_topk=1) with end_token=[] so nothing stops a row
early; one intra-op thread pool of job threads (intra_threads), one generation at a time
(inter_threads=1). Single rows stream through generate_tokens (time of the first token);
batches go through generate_batch; perplexity through forward_batch (full logits).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import common


def prepare(job: dict) -> str:
    """Convert the HF folder to WORK/ct2-<quantization> unless it is already there."""
    out = Path(job["work"]) / f"ct2-{job['variant']}"
    if (out / "model.bin").exists():
        return str(out)
    converter = Path(sys.executable).with_name("ct2-transformers-converter")
    tmp = out.with_name(out.name + ".tmp")
    cmd = [str(converter), "--model", job["sources"]["hf_dir"], "--output_dir", str(tmp),
           "--quantization", job["variant"], "--force"]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    tmp.rename(out)
    return str(out)


def open_model(job: dict):
    import ctranslate2

    generator = ctranslate2.Generator(job["model"], device="cpu", compute_type="default",
                                      intra_threads=job["threads"], inter_threads=1)
    vocab = json.loads(Path(job["model"], "vocabulary.json").read_text())  # id -> token string
    return {"ct2": ctranslate2, "generator": generator, "vocab": vocab}


def describe(model) -> str:
    return f"CTranslate2 {model['ct2'].__version__} (compute type {model['generator'].compute_type})"


def _tokens(model, ids: list[int]) -> list[str]:
    return [model["vocab"][i] for i in ids]


def generate(model, rows: list[list[int]], n: int) -> common.Run:
    """Greedy, exactly n new tokens per row (end_token=[] and min_length=n)."""
    options = dict(max_length=n, min_length=n, sampling_topk=1, end_token=[])
    if len(rows) == 1:
        clock, new = common.Clock(), []
        for step in model["generator"].generate_tokens(_tokens(model, rows[0]), **options):
            clock.first()
            new.append(step.token_id)
        return clock.run([new])
    clock = common.Clock()
    results = model["generator"].generate_batch([_tokens(model, r) for r in rows], include_prompt_in_result=False,
                                                **options)
    return clock.run([r.sequences_ids[0] for r in results])


def teacher_forced_logits(model, ids: list[int]) -> np.ndarray:
    """(len, vocab) logits of one teacher-forced pass (forward_batch)."""
    return np.asarray(model["generator"].forward_batch([_tokens(model, ids)]))[0]


if __name__ == "__main__":
    common.main(sys.modules[__name__])
