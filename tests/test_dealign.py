"""scripts/dealign_gguf.py on the real SmolLM2 GGUF: its "float" weights lie on a 4-bit grid (the fact that makes
4-bit races on it measure grid alignment), and the de-aligned copy computes the same function off that grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SMOLLM2_GGUF, require_real_models

ROOT = Path(__file__).resolve().parent.parent


def float_minimum_blocks(weight: np.ndarray, block: int = 32) -> np.ndarray:
    """WEIGHT (out, in) rounded to 16 levels from each block's own minimum (llama.cpp's Q4_1 form), dequantized."""
    out, k = weight.shape
    w = weight.reshape(out, k // block, block)
    low, high = w.min(-1, keepdims=True), w.max(-1, keepdims=True)
    step = np.where(high > low, (high - low) / 15, 1)
    return (np.round((w - low) / step) * step + low).reshape(out, k)


def matrices(path: Path) -> dict[str, np.ndarray]:
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(path))
    return {t.name: dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
            for t in reader.tensors if t.name.startswith("blk.2.") and len(t.shape) == 2}


@pytest.fixture(scope="module")
def dealigned(tmp_path_factory) -> Path:
    require_real_models()
    out = tmp_path_factory.mktemp("dealigned") / "smollm2.F32.gguf"
    done = subprocess.run([sys.executable, str(ROOT / "scripts/dealign_gguf.py"), str(SMOLLM2_GGUF), str(out), "--spread", "1.25"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_shipped_weights_sit_on_a_4_bit_grid_and_dealigned_ones_do_not(dealigned):
    for name, w in matrices(SMOLLM2_GGUF).items():
        assert np.abs(float_minimum_blocks(w) - w).max() <= 1e-6 * np.abs(w).max(), name  # exactly representable
    for name, w in matrices(dealigned).items():
        error = np.abs(float_minimum_blocks(w) - w).mean() / np.abs(w).mean()
        assert error > 0.01, name  # measured 0.04-0.05: as far from the grid as float weights


def test_dealigned_model_computes_what_the_shipped_one_does(dealigned):
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([list(range(200, 264))])
    logits = []
    for path in (SMOLLM2_GGUF, dealigned):
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        with torch.no_grad():
            logits.append(model(ids).logits[0].numpy())
    assert np.abs(logits[0] - logits[1]).max() < 1e-3 * np.abs(logits[0]).max()
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).all()
