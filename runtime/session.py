"""Open an onnxruntime session for a bundle on the chosen execution provider.

`resolve_provider` turns the user's choice (auto, cpu, cuda) into one that this onnxruntime
really offers; `open_session` builds the session; `DEVICES` says where each provider keeps
tensors, so the decoder can keep the KV cache there (I/O binding) instead of copying it
through numpy every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import onnxruntime as ort

from edgelm.errors import BundleError, GenerationError
from edgelm.runtime.threads import CpuBudget, usable_cpus

T = TypeVar("T")
# What a failing run raises: run_with_iobinding a RuntimeError, run() onnxruntime's own classes
# (Fail, InvalidArgument, RuntimeException, ...), which derive from Exception only.
_ORT_ERRORS = (RuntimeError, *(getattr(ort.capi.onnxruntime_pybind11_state, name) for name in (
    "Fail", "InvalidArgument", "RuntimeException", "EPFail", "EngineError", "NotImplemented", "InvalidGraph")
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)))
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class Device:
    """Where a provider keeps tensors: onnxruntime's (device_type, device_id) pair."""

    type: str
    id: int = 0


DEVICES = {"cpu": Device("cpu"), "cuda": Device("cuda")}

# onnxruntime graph fusions left out on the CPU because its fused kernel is slower there than the nodes it
# replaces. SkipLayerNormFusion (Add + LayerNormalization -> SkipLayerNormalization): onnxruntime 1.32's CPU
# SkipLayerNormalization is slower than the two nodes, so encoders run faster without it, in float and INT8
# (measured in docs/benchmarks.md, "Encoders: sentence embeddings").
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
        if any(sign in first for sign in _TOO_OLD):
            raise BundleError(f"onnxruntime {ort.__version__} is too old for {graph.name} ({_reason(first)}); "
                              "upgrade onnxruntime (pip install -U onnxruntime)") from e
        raise BundleError(f"onnxruntime cannot load {graph.name}: {first}; re-export the bundle") from e
    if PROVIDERS[provider] not in session.get_providers():  # onnxruntime fell back silently
        raise BundleError(f"onnxruntime could not start the {provider} provider for {graph.name}; check the GPU driver and CUDA libraries")
    return session


def run_graph(call: Callable[[], T]) -> T:
    """CALL (one session run), with onnxruntime's failure as one GenerationError line, not its C++ trace."""
    try:
        return call()
    except _ORT_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        node, _, status = first.partition(" Status Message: ")  # "...running GroupQueryAttention node. Name:'...'"
        where = node.rsplit("while running ", 1)[-1].split(". Name:")[0] if status else ""
        short = " ".join(status.split()[-12:]) if len(status) > 200 else status  # the C++ source path is noise
        reason = f"{where}: {short}" if status else _reason(first)
        raise GenerationError(f"onnxruntime failed running the graph ({reason.strip()}); check the bundle with "
                              f"`edgelm verify` and this onnxruntime ({ort.__version__}) against the bundle's needs") from e


# What onnxruntime says when a graph uses more than it knows: a newer IR or opset, an operator's
# newer attributes or inputs (an int8 KV cache needs GroupQueryAttention's of onnxruntime 1.25).
_TOO_OLD = ("Unsupported model IR version", "Unrecognized attribute", "not in range [min=", "is under development",
            "opset import is not supported", "this ONNX Runtime build does not support")


def _reason(message: str) -> str:
    """The end of onnxruntime's message, without the source paths and node dumps before it."""
    for mark in (", Error ", ") ", " : "):
        if mark in message:
            message = message.rsplit(mark, 1)[-1]
            break
    return message.strip()[:160]
