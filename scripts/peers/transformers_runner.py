"""transformers reference runner: PyTorch eager fp32, eager attention (the project's venv).

The HF folder (job sources hf_dir) is loaded in float32 with attn_implementation="eager" and
torch.set_num_threads(threads). Generation is transformers' own `generate` (greedy,
eos_token_id=None so it runs to max_new_tokens); a streamer timestamps every token as
`generate` hands it out, which gives the time of the first token without a second run.
Single rows only: the benchmark runs it for the single and deep scenarios.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import common


def prepare(job: dict) -> str:
    return job["sources"]["hf_dir"]


def hf_folder(job: dict) -> str:
    """Write the fp32 HF folder the other peers convert from: the shipped GGUF, dequantized by
    transformers' GGUF loader (as edgelm's export reads it), saved with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(job["sources"]["gguf"]), Path(job["sources"]["hf_dir"])
    if (out / "config.json").exists():
        return str(out)
    tmp = out.with_name(out.name + ".tmp")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers 5 will not save a model loaded from GGUF ("quantized with gguf and is not serializable"):
    # the same float weights go into a plain model of the same config first
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
    tmp.rename(out)
    return str(out)


def open_model(job: dict):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(job["threads"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32, attn_implementation="eager")
    return {"torch": torch, "model": model.eval()}


def describe(model) -> str:
    import transformers

    return f"transformers {transformers.__version__} (torch {model['torch'].__version__}, eager attention, fp32)"


class _Stamps:
    """A generate() streamer: the first put() is the prompt, every later one a new token."""

    def __init__(self, clock: common.Clock):
        self.clock, self.tokens, self.prompt_seen = clock, [], False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.clock.first()
        self.tokens.extend(int(t) for t in value.reshape(-1))

    def end(self) -> None:
        pass


def generate(model, rows: list[list[int]], n: int) -> common.Run:
    torch = model["torch"]
    from transformers import GenerationConfig

    if len(rows) != 1:
        raise SystemExit("error: the transformers runner does single rows only")
    ids = torch.tensor(rows)
    config = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    clock = common.Clock()
    stamps = _Stamps(clock)
    with torch.inference_mode():
        model["model"].generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=stamps)
    return clock.run([stamps.tokens])


def teacher_forced_logits(model, ids: list[int]) -> np.ndarray:
    torch = model["torch"]
    with torch.inference_mode():
        return model["model"](torch.tensor([ids])).logits[0].float().numpy()  # (len, vocab)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
