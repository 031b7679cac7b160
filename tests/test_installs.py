"""Each command on an install without the extra it needs names the extra; the runtime commands need none.

A real install without the extras would take minutes to build per case; instead each command runs
in a subprocess whose import system refuses the extras' packages, exactly as an absent package would.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# top-level packages each extra brings (pyproject.toml); blocking one is enough to lose the extra
EXTRA_PACKAGES = {
    "export": ["torch", "transformers", "onnxscript", "onnx", "sentence_transformers", "gguf", "accelerate"],
    "quantize": ["onnx", "onnx_ir"],
    "serve": ["starlette", "uvicorn", "prometheus_client"],
    "batch": ["pyarrow"],
    "ray": ["ray", "pyarrow"],
}

LAUNCHER = """
import sys
blocked = set(sys.argv[1].split(","))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
from edgelm.cli import main
sys.argv = ["edgelm", *sys.argv[2:]]
main()
"""


def run_without(packages: list[str], *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCHER, ",".join(packages), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_names_the_extra(done: subprocess.CompletedProcess, command: str, extra: str, missing: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert lines == [f"error: edgelm {command} needs the {extra} extra ({missing} is not installed): "
                     f"pip install 'edgelm[{extra}]'"], done.stderr


@pytest.mark.parametrize("missing", ["torch", "transformers", "onnxscript", "onnx"])
def test_export_without_the_export_extra(checkpoints, tmp_path, missing):
    done = run_without([missing], "export", checkpoints("gpt2"), tmp_path / "out")
    assert_names_the_extra(done, "export", "export", missing)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["onnx_ir", "onnx"])
def test_quantize_without_the_quantize_extra(bundles, tmp_path, missing):
    """onnx_ir is the case that used to end in a traceback from inside onnxruntime.quantization."""
    done = run_without([missing], "quantize", bundles("gpt2")[0], tmp_path / "out", "--method", "int8")
    assert_names_the_extra(done, "quantize", "quantize", missing)
    assert not (tmp_path / "out").exists()


def test_serve_without_the_serve_extra(bundles):
    done = run_without(["uvicorn"], "serve", bundles("gpt2")[0])
    assert_names_the_extra(done, "serve", "serve", "uvicorn")


def test_batch_without_the_batch_extra(bundles, tmp_path):
    done = run_without(["pyarrow"], "batch", bundles("gpt2")[0], tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert_names_the_extra(done, "batch", "batch", "pyarrow")


def test_batch_on_ray_without_the_ray_extra(bundles, tmp_path):
    done = run_without(["ray"], "batch", bundles("gpt2")[0], tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--ray", "auto")
    assert_names_the_extra(done, "batch --ray", "ray", "ray")


def test_the_runtime_commands_run_with_every_extra_missing(bundles):
    """What an edge box installs (`pip install edgelm`) runs every bundle command."""
    none = sorted({p for packages in EXTRA_PACKAGES.values() for p in packages})
    decoder, embedder = bundles("llama")[0], bundles("bert/feature-extraction")[0]
    classifier, masker = bundles("bert/text-classification")[0], bundles("bert/fill-mask")[0]
    for args in (("inspect", decoder), ("generate", decoder, "hello", "--max-new-tokens", "3"),
                 ("embed", embedder, "hello"), ("classify", classifier, "hello"), ("fill-mask", masker, "a [MASK] b")):
        done = run_without(none, *args)
        assert done.returncode == 0 and done.stdout.strip(), (args, done.stderr)
        assert "Traceback" not in done.stderr and "warning" not in done.stderr, done.stderr
