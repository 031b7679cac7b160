"""edgelm.runtime: run bundles with numpy + onnxruntime + tokenizers; never torch.

    from edgelm.runtime import load
    lm = load("./smol")                   # reads the manifest, checks files, picks the provider
    lm.generate("Hello", max_new_tokens=32)
    enc = load("./minilm"); enc.embed(["a", "b"])
    verify("./smol").passed               # the bundle against its own conformance vectors, on this machine

This package imports nothing from edgelm.export or edgelm.quantize, and no torch,
transformers, optimum or onnx (tests/test_runtime_imports.py proves it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from edgelm.runtime.encoder import Encoder
    from edgelm.runtime.language_model import LanguageModel


def load(path: str | Path, provider: str = "auto", threads: int | None = None,
         fast: bool = False) -> Union["LanguageModel", "Encoder"]:
    """Open the bundle at PATH: a LanguageModel for a decoder, an Encoder for an encoder.

    provider: "auto" (CUDA when onnxruntime offers it, else CPU, silently), "cpu" or "cuda".
    threads: onnxruntime's intra-op threads. None: the CPUs this process may use (its affinity, capped
    by its cgroup's CPU quota: runtime/threads.py), not the host's core count; 0: onnxruntime's own choice.
    fast: check every file's size but hash only small ones (say so in `file_notes`).
    """
    from edgelm.runtime.bundle import open_bundle

    bundle = open_bundle(path, provider=provider, threads=threads, fast=fast)
    if bundle.manifest.is_decoder:
        from edgelm.runtime.language_model import LanguageModel

        return LanguageModel(bundle)
    from edgelm.runtime.encoder import Encoder

    return Encoder(bundle)


def verify(path: str | Path, provider: str = "auto", threads: int | None = None):
    """Check the bundle at PATH against the conformance vectors it carries (see runtime/verifier.py)."""
    from edgelm.runtime.verifier import verify as run

    return run(path, provider=provider, threads=threads)


__all__ = ["load", "verify"]
