"""Open an onnxruntime session for a bundle on the chosen execution provider.

`resolve_provider` turns the user's choice (auto, cpu, cuda) into one that this onnxruntime
really offers; `open_session` builds the session; `DEVICES` says where each provider keeps
tensors, so the decoder can keep the KV cache there (I/O binding) instead of copying it
through numpy every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from edgelm.errors import BundleError
from edgelm.runtime.threads import CpuBudget, usable_cpus

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class Device:
    """Where a provider keeps tensors: onnxruntime's (device_type, device_id) pair."""

    type: str
    id: int = 0


DEVICES = {"cpu": Device("cpu"), "cuda": Device("cuda")}

# onnxruntime graph fusions left out on the CPU because its fused kernel is slower there than the nodes it
# replaces. SkipLayerNormFusion (Add + LayerNormalization -> SkipLayerNormalization): on a (640, 384) batch,
# one thread, onnxruntime 1.32, SkipLayerNormalization takes 1.8-2.0 ms where Add + LayerNormalization take
# 0.4-0.5 ms; all-MiniLM-L6-v2 runs 8% faster in float and 15-25% faster in INT8 without it (docs/benchmarks.md).
# Decoder graphs written by export carry their skip-norm nodes explicitly, so this changes nothing for them.
CPU_SLOWER_FUSIONS = ("SkipLayerNormFusion",)


def resolve_provider(provider: str = "auto") -> str:
    """'auto' -> CUDA when onnxruntime offers it, else CPU (the normal case on an edge box: no
    warning; `provider_note` says why); 'cuda' without it fails clearly."""
    available = ort.get_available_providers()
    if provider == "auto":
        return "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if provider not in PROVIDERS:
        raise BundleError(f"provider {provider!r} is not one of auto, cpu, cuda")
    if PROVIDERS[provider] not in available:
        raise BundleError(
            f"provider {provider!r} is not available in this onnxruntime ({', '.join(available)}); "
            "install onnxruntime-gpu (pip install 'edgelm[gpu]') or use provider='cpu'"
        )
    return provider


def provider_note(asked: str, chosen: str) -> str:
    """Why CHOSEN runs, for --verbose, inspect and --stats."""
    if asked == "auto":
        why = "CUDA is available" if chosen == "cuda" else "this onnxruntime has no CUDA provider"
        return f"{chosen} (auto: {why})"
    return f"{chosen} (asked for)"


def choose_threads(threads: int | None) -> CpuBudget:
    """Intra-op threads: THREADS when given (0 = onnxruntime's own choice), else the CPUs this process may use."""
    if threads is None:
        return usable_cpus()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise BundleError(f"threads must be a whole number >= 0 (0 = onnxruntime's choice), got {threads!r}")
    return CpuBudget(threads, "onnxruntime's own choice" if threads == 0 else "asked for")


def open_session(graph: Path, provider: str = "cpu", threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession with full graph optimisation (less CPU_SLOWER_FUSIONS on the CPU).

    THREADS caps intra-op threads; by default it is the number of CPUs this process may use
    (affinity and CPU quota), not the host's core count (see threads.py).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only; onnxruntime's warnings are not the user's business
    options.intra_op_num_threads = choose_threads(threads).count
    if provider == "cuda" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from pip's nvidia-* packages, when that is where they are
    try:
        session = ort.InferenceSession(str(graph), sess_options=options, providers=[PROVIDERS[provider]],
                                       disabled_optimizers=list(CPU_SLOWER_FUSIONS) if provider == "cpu" else None)
    except Exception as e:  # onnxruntime raises bare RuntimeError/Fail subclasses
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "External data path" in first or "external data location" in first:
            raise BundleError(f"{graph.name} reads its weights from outside the bundle, which is refused "
                              f"({first.split(' : ')[-1]}); re-export the bundle") from e
        raise BundleError(f"onnxruntime cannot load {graph.name}: {first}; re-export the bundle") from e
    if PROVIDERS[provider] not in session.get_providers():  # onnxruntime fell back silently
        raise BundleError(f"onnxruntime could not start the {provider} provider for {graph.name}; check the GPU driver and CUDA libraries")
    return session
