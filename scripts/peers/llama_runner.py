"""llama.cpp peer runner through llama-cpp-python (its venv's python; see common.py for the job).

Models: `llama_cpp.llama_model_quantize` of the shipped GGUF (allow_requantize) into
WORK/<name>-F32.gguf, -Q8_0.gguf, -Q4_0.gguf and -Q4_K_M.gguf, once; "shipped" runs the file as it is. llama.cpp's own rules apply (for
Q4_0 it keeps the tied embedding/output tensor at a higher precision, as a user would get).

Context: n_ctx 4096, n_batch 2048 (a 1,976-token prompt is one decode call), n_ubatch 512,
n_threads = n_threads_batch = job threads, flash attention on (the binding offers it).
Single rows: the high-level `Llama.generate` (greedy sampler, temp 0; it never stops on eos
by itself) after `reset()`, so no KV prefix is reused between the warm-up and the timed run.
Batches: the binding has no batched generation, so they go through the C API (ctypes): one
context with n_seq_max = rows, one `llama_batch` holding every row's prompt with one seq_id
per row, then one token per row per `llama_decode`, argmax on each row's logits.
Perplexity: `Llama(logits_all=True)`, `eval(ids)`, then `scores`.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

import common

N_CTX, N_BATCH, N_UBATCH = 4096, 2048, 512
FLASH_ATTENTION = True


def prepare(job: dict) -> str:
    """Requantize the shipped GGUF to WORK/<its name>-<variant>.gguf unless it is there ("shipped": the file as it is)."""
    import llama_cpp

    source = Path(job["sources"]["gguf"])
    if job["variant"] == "shipped":
        return str(source)
    out = Path(job["work"]) / f"{source.stem.split('.')[0]}-{job['variant']}.gguf"
    if out.exists():
        return str(out)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"F32": llama_cpp.LLAMA_FTYPE_ALL_F32, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
                    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[job["variant"]]
    params.allow_requantize = True
    params.nthread = job["threads"]
    tmp = out.with_name(out.name + ".tmp")
    if llama_cpp.llama_model_quantize(job["sources"]["gguf"].encode(), str(tmp).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"error: llama_model_quantize to {job['variant']} failed")
    tmp.rename(out)
    return str(out)


def open_model(job: dict):
    """A Llama for single rows and perplexity; a bare C model + context for batches."""
    import llama_cpp

    model = {"llama_cpp": llama_cpp, "threads": job["threads"], "path": job["model"]}
    if job["scenario"] == "batch":
        model.update(_c_context(llama_cpp, job["model"], job["threads"], len(job["rows"])))
        return model
    ppl = job["scenario"] == "ppl"
    n_ctx = max(N_CTX, len(job["rows"][0]) + job["new_tokens"]) if not ppl else -(-len(job["rows"][0]) // 256) * 256
    model["llm"] = llama_cpp.Llama(model_path=job["model"], n_ctx=n_ctx, n_batch=N_BATCH, n_ubatch=N_UBATCH,
                                   n_threads=job["threads"], n_threads_batch=job["threads"],
                                   flash_attn=FLASH_ATTENTION, logits_all=ppl, verbose=False)
    return model


def describe(model) -> str:
    llama_cpp = model["llama_cpp"]
    info = llama_cpp.llama_print_system_info().decode().replace("CPU :", "")  # "CPU : SSE3 = 1 | AVX = 1 | ..."
    simd = [p.split("=")[0].strip() for p in info.split("|") if p.strip().endswith("= 1")]
    return (f"llama-cpp-python {llama_cpp.__version__} (flash attention {'on' if FLASH_ATTENTION else 'off'}, "
            f"n_batch {N_BATCH}, n_ubatch {N_UBATCH}; ggml CPU backend built with {' '.join(simd)})")


# -- single rows: the high-level API -----------------------------------------------------------
def generate(model, rows: list[list[int]], n: int) -> common.Run:
    if len(rows) > 1:
        return _generate_batch(model, rows, n)
    llm = model["llm"]
    llm.reset()  # or generate() reuses the KV cache of a matching prompt prefix
    clock, new = common.Clock(), []
    for token in llm.generate(rows[0], top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        clock.first()
        new.append(int(token))
        if len(new) == n:
            break
    return clock.run([new])


def teacher_forced_logits(model, ids: list[int]) -> np.ndarray:
    llm = model["llm"]
    llm.reset()
    llm.eval(ids)
    return np.asarray(llm.scores[: len(ids)])  # (len, vocab)


# -- batches: the C API ------------------------------------------------------------------------
def _c_context(llama_cpp, path: str, threads: int, seqs: int) -> dict:
    """Model + context with one sequence slot per row, through llama.cpp's C API."""
    llama_cpp.llama_backend_init()
    c_model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = N_CTX, N_BATCH, N_UBATCH, seqs
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if FLASH_ATTENTION
                              else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    ctx = llama_cpp.llama_init_from_model(c_model, params)
    if not c_model or not ctx:
        raise SystemExit(f"error: llama.cpp could not open {path} with {seqs} sequences")
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(c_model))
    return {"c_model": c_model, "ctx": ctx, "vocab": vocab, "batch": llama_cpp.llama_batch_init(N_BATCH, 0, 1)}


def _fill(batch, entries: list[tuple[int, int, int, bool]]) -> None:
    """entries: (token, position, sequence id, wants logits) -> the llama_batch arrays."""
    for k, (token, pos, seq, logits) in enumerate(entries):
        batch.token[k], batch.pos[k], batch.n_seq_id[k] = token, pos, 1
        batch.seq_id[k][0], batch.logits[k] = seq, logits
    batch.n_tokens = len(entries)


def _decode_and_pick(model, entries) -> list[int]:
    """One llama_decode over ENTRIES; the argmax of every position that asked for logits."""
    llama_cpp, ctx = model["llama_cpp"], model["ctx"]
    _fill(model["batch"], entries)
    if llama_cpp.llama_decode(ctx, model["batch"]) != 0:
        raise SystemExit("error: llama_decode failed")
    picks = []
    for k, (_, _, _, logits) in enumerate(entries):
        if logits:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, k), shape=(model["vocab"],))
            picks.append(int(row.argmax()))
    return picks


def _generate_batch(model, rows: list[list[int]], n: int) -> common.Run:
    """Every prompt in one decode call (seq_id = row), then one token per row per call."""
    llama_cpp = model["llama_cpp"]
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(model["ctx"]), True)
    clock = common.Clock()
    prompt = [(tok, pos, r, pos == len(row) - 1) for r, row in enumerate(rows) for pos, tok in enumerate(row)]
    chosen = _decode_and_pick(model, prompt)  # (rows,) first tokens
    clock.first()
    new = [[t] for t in chosen]
    for step in range(1, n):
        entries = [(new[r][-1], len(rows[r]) + step - 1, r, True) for r in range(len(rows))]
        for r, t in enumerate(_decode_and_pick(model, entries)):
            new[r].append(t)
    return clock.run(new)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
