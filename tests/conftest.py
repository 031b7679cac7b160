"""Shared fixtures: tiny checkpoints and their bundles (built once per session), real model paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import tiny

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("EDGELM_MODELS", REPO / ".models"))
SMOLLM2_GGUF = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = MODELS / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name -> checkpoint folder, built on first use: 'gpt2', 'llama', 'bert/fill-mask', ..."""
    root = tmp_path_factory.mktemp("checkpoints")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            folder = root / name.replace("/", "-")
            if "/" in name:
                family, task = name.split("/")
                cache[name] = tiny.save_encoder(family, task, folder)
            else:
                cache[name] = tiny.save_decoder(name, folder)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, checkpoints):
    """name -> exported bundle folder of the tiny checkpoint `name`, exported once per session."""
    from edgelm.export import export

    root = tmp_path_factory.mktemp("bundles")
    cache: dict[str, tuple[Path, object]] = {}

    def get(name: str):
        if name not in cache:
            out = root / name.replace("/", "-")
            task = name.split("/")[1] if "/" in name else None
            cache[name] = (out, export(checkpoints(name), out, task, progress=False))
        return cache[name]

    return get


def require_real_models():
    """The real models come from `make models`; a missing one is a set-up error, not a skip."""
    missing = [p for p in (SMOLLM2_GGUF, MINILM) if not p.exists()]
    if missing:
        pytest.fail(f"real models missing ({', '.join(map(str, missing))}); run `make models` first", pytrace=False)
