"""Shared fixtures: tiny checkpoints and their bundles (built once per session), real model paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("EDGELM_MODELS", REPO / ".models"))
SMOLLM2_GGUF = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = MODELS / "all-MiniLM-L6-v2"
MPNET = MODELS / "all-mpnet-base-v2"
GEMMA3_GGUF = MODELS / "gemma-3-270m-q4_k_m.gguf"
# Bundles of the tiny checkpoints exported elsewhere (folder/<name with / as ->), for running the
# runtime tests (the CUDA ones) on a machine that has a GPU but not the export toolchain.
PREBUILT = Path(os.environ["EDGELM_PREBUILT_BUNDLES"]) if os.environ.get("EDGELM_PREBUILT_BUNDLES") else None


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs the CUDA execution provider (onnxruntime-gpu and a GPU)")
    config.addinivalue_line("markers", "node: runs the Node.js client in clients/node (Node 20+, npm ci)")
    # The Ctrl-C tests send SIGINT to CLI processes they start. A suite started in the background by a
    # script (`.ci/run &`) has SIGINT ignored, as POSIX shells do for background jobs, and every child
    # would inherit that and finish instead (measured: 5 failures); give the children a terminal's default.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    root = tmp_path_factory.mktemp("bundles")
    cache: dict[str, tuple[Path, object]] = {}

    def get(name: str):
        if name not in cache:
            prebuilt = PREBUILT / name.replace("/", "-") if PREBUILT else None
            if prebuilt and (prebuilt / "manifest.json").is_file():  # a GPU box without the export toolchain
                from edgelm.runtime.manifest import read_manifest

                cache[name] = (prebuilt, read_manifest(prebuilt))
                return cache[name]
            from edgelm.export import export

            out = root / name.replace("/", "-")
            task = name.split("/")[1] if "/" in name else None
            cache[name] = (out, export(checkpoints(name), out, task, progress=False))
        return cache[name]

    return get


# The tiny bundles edgelm batch's tests run (test_batch.py, test_batch_ray.py): one per task.
@pytest.fixture(scope="session")
def embedder(bundles):
    return bundles("bert/feature-extraction")[0]


@pytest.fixture(scope="session")
def classifier(bundles):
    return bundles("roberta/text-classification")[0]


@pytest.fixture(scope="session")
def decoder(bundles):
    return bundles("gpt2")[0]


def require_real_models():
    """The real models come from `make models`; a missing one is a set-up error, not a skip."""
    missing = [p for p in (SMOLLM2_GGUF, MINILM, MPNET, GEMMA3_GGUF) if not p.exists()]
    if missing:
        pytest.fail(f"real models missing ({', '.join(map(str, missing))}); run `make models` first", pytrace=False)


def _export_with_the_cli(tmp_path_factory, name: str, *args) -> Path:
    """`edgelm export ARGS OUT` of a real model into a fresh folder NAME; returns OUT."""
    require_real_models()
    out = tmp_path_factory.mktemp("real") / name
    result = subprocess.run([sys.executable, "-m", "edgelm.cli", "export", *map(str, args), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def smollm2_bundle(tmp_path_factory):
    """SmolLM2 exported once per session through the CLI (about a minute), shared by every module."""
    return _export_with_the_cli(tmp_path_factory, "smol", SMOLLM2_GGUF)


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory):
    """all-MiniLM-L6-v2 exported once per session through the CLI as a feature-extraction bundle."""
    return _export_with_the_cli(tmp_path_factory, "minilm", MINILM, "--task", "feature-extraction")


@pytest.fixture(scope="session")
def mpnet_bundle(tmp_path_factory):
    """all-mpnet-base-v2 exported once per session through the CLI (its folder's task: feature-extraction)."""
    return _export_with_the_cli(tmp_path_factory, "mpnet", MPNET)


def _quantize_with_the_cli(src: Path, out: Path, *args: str) -> Path:
    """`edgelm quantize SRC OUT [ARGS]` with the default method; OUT, checked against its files."""
    from edgelm.runtime.manifest import check_files, read_manifest

    result = subprocess.run([sys.executable, "-m", "edgelm.cli", "quantize", str(src), str(out), *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "passed" in result.stdout and "of float" in result.stdout, result.stdout
    check_files(out, read_manifest(out))
    return out


@pytest.fixture(scope="session")
def smollm2_int8_bundle(smollm2_bundle, tmp_path_factory):
    """SmolLM2 quantized once per session by the CLI with its default method (int8 weight-only)."""
    return _quantize_with_the_cli(smollm2_bundle, tmp_path_factory.mktemp("quantized-real") / "smol-int8")


@pytest.fixture(scope="session")
def mpnet_int8_bundle(mpnet_bundle, tmp_path_factory):
    """all-mpnet-base-v2 quantized once per session by the CLI with its default method (int8-per-token)."""
    return _quantize_with_the_cli(mpnet_bundle, tmp_path_factory.mktemp("quantized-real") / "mpnet-int8")


@pytest.fixture(scope="session")
def minilm_int8_bundle(minilm_bundle, tmp_path_factory):
    """all-MiniLM-L6-v2 quantized once per session by the CLI with its default method (int8-per-token)."""
    return _quantize_with_the_cli(minilm_bundle, tmp_path_factory.mktemp("quantized-real") / "minilm-int8")
