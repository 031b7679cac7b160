"""onnxruntime-genai peer runner (run with the genai venv's python; see common.py for the job).

Models: `python -m onnxruntime_genai.models.builder -i HF_DIR -o WORK/genai-P -p P -e cpu` for
P in fp32 / int8 / int4, built once. Generation goes through og.Generator with greedy search
and min_length = max_length, so every row runs to full length (eos can never end it).
Batches are right-padded with id 0 (`<|endoftext|>`), and the model's pad id is set to 0 too:
its own pad id (2) occurs inside chat prompts, and GroupQueryAttention wants right padding
(see /work/shared/FACTS.md). Perplexity runs the same model.onnx directly in onnxruntime
with an empty past, since og.Generator exposes only the last position's logits.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import common

PAD = 0


# -- preparing ---------------------------------------------------------------------------------
def prepare(job: dict) -> str:
    """Build WORK/genai-<precision> with genai's model builder unless it is already there."""
    out = Path(job["work"]) / f"genai-{job['variant']}"
    if (out / "genai_config.json").exists():
        return str(out)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", job["sources"]["hf_dir"], "-o", str(tmp),
           "-p", job["variant"], "-e", "cpu", "-c", str(Path(job["work"]) / "genai-cache")]
    subprocess.run(cmd, check=True, stdout=sys.stderr)  # the builder talks on stdout: keep ours clean
    tmp.rename(out)
    return str(out)


# -- running -----------------------------------------------------------------------------------
def open_model(job: dict):
    """og.Model with JOB's threads and pad id 0 written over genai_config.json."""
    import onnxruntime_genai as og

    config = og.Config(job["model"])
    threads = job["threads"]
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"pad_token_id": PAD, "decoder": {"session_options": options}}}))
    return {"og": og, "model": og.Model(config), "path": job["model"], "threads": threads}


def describe(model) -> str:
    return f"onnxruntime-genai {model['og'].__version__}"


def generate(model, rows: list[list[int]], n: int) -> common.Run:
    """Greedy, forced to WIDTH + n tokens per row (genai's lengths include the padded prompt)."""
    og = model["og"]
    width = max(map(len, rows))
    ids = np.full((len(rows), width), PAD, dtype=np.int32)  # (batch, width), right-padded
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    params = og.GeneratorParams(model["model"])
    params.set_search_options(do_sample=False, max_length=width + n, min_length=width + n, batch_size=len(rows))
    clock = common.Clock()
    gen = og.Generator(model["model"], params)
    gen.append_tokens(ids)  # prefill
    gen.generate_next_token()
    clock.first()
    while not gen.is_done():
        gen.generate_next_token()
    return clock.run([gen.get_sequence(i)[width:].tolist() for i in range(len(rows))])


def teacher_forced_logits(model, ids: list[int]) -> np.ndarray:
    """(len, vocab) logits from model.onnx in plain onnxruntime, empty past."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = model["threads"], 1
    decoder = json.loads(Path(model["path"], "genai_config.json").read_text())["model"]["decoder"]
    session = ort.InferenceSession(str(Path(model["path"], decoder["filename"])), options, providers=["CPUExecutionProvider"])
    feed = {}
    for spec in session.get_inputs():
        if spec.name == "input_ids":
            feed[spec.name] = np.asarray([ids], dtype=np.int64)
        elif spec.name == "attention_mask":
            feed[spec.name] = np.ones((1, len(ids)), dtype=np.int64)
        elif spec.name == "position_ids":
            feed[spec.name] = np.arange(len(ids), dtype=np.int64)[None]
        elif spec.name.startswith("past_key_values"):  # (batch, kv_heads, past=0, head): sizes from genai_config
            dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
            feed[spec.name] = np.zeros((1, decoder["num_key_value_heads"], 0, decoder["head_size"]), dtype=dtype)
        else:
            raise SystemExit(f"error: genai model input {spec.name} is not handled")
    return session.run(["logits"], feed)[0][0]  # (len, vocab)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
