"""edgelm.runtime must work where torch, transformers, optimum and onnx are not installed; and data
flows one way (checkpoint -> export -> bundle -> quantize -> bundle -> runtime), so no stage imports
a stage upstream of it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "transformers", "optimum", "onnx", "sentence_transformers", "edgelm.export", "edgelm.quantize"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED or any(name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
""")


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True)


def test_blocker_really_blocks():
    result = run_blocked("import torch")
    assert result.returncode != 0 and "blocked" in result.stderr


def test_runtime_modules_import_and_run_a_bundle_without_torch(bundles):
    out, _ = bundles("llama")
    result = run_blocked(f"""
        import pkgutil, importlib, edgelm.runtime
        for m in pkgutil.iter_modules(edgelm.runtime.__path__):
            importlib.import_module("edgelm.runtime." + m.name)
        import onnxruntime as ort
        from edgelm.runtime.manifest import read_manifest, check_files
        from edgelm.runtime.decoder import DecoderGraph
        from edgelm.runtime.generator import greedy_continuation
        m = read_manifest({str(out)!r}); check_files({str(out)!r}, m)
        g = DecoderGraph(ort.InferenceSession({str(out / 'model.onnx')!r}), m)
        print(len(greedy_continuation(g, [1, 2, 3], 4)))
        import edgelm.cli, edgelm.report
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4"


def test_load_generate_stream_batch_and_embed_run_without_torch(bundles):
    decoder, _ = bundles("llama")
    encoder, manifest = bundles("bert/feature-extraction")
    result = run_blocked(f"""
        import json
        from edgelm.runtime import load
        lm = load({str(decoder)!r}, provider="cpu")
        text = lm.generate("The quick brown fox", max_new_tokens=8)
        streamed = "".join(lm.stream("The quick brown fox", max_new_tokens=8))
        batch = lm.generate(["Paris", "The quick brown fox"], max_new_tokens=8)
        chat = lm.generate("hello", chat=True, max_new_tokens=4)
        gen = lm.generator(max_new_tokens=3)
        gen.append_tokens(lm.encode("Paris"))
        while not gen.is_done():
            gen.generate_next_token()
        vectors = load({str(encoder)!r}, provider="cpu").embed(["a", "b c"])
        import edgelm.cli, edgelm.console
        print(json.dumps({{"text": text, "streamed": streamed, "batch": batch, "chat": chat,
                          "steps": len(gen.get_new_tokens(0)), "shape": list(vectors.shape)}}))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["streamed"] == out["text"] and out["batch"][1] == out["text"] and out["chat"]
    assert out["steps"] == 3 and out["shape"] == [2, manifest.pooling.dimension]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module PATH imports, at any depth (function-level imports included), relative ones resolved in PACKAGE."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # `from edgelm import export`
    return names


def forbidden_imports(folder: Path, package: str, forbidden: set[str]) -> list[str]:
    """'FILE imports MODULE' for each file in FOLDER (PACKAGE's source) that imports a FORBIDDEN module or one under it."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        where = path.relative_to(folder)
        names = imported_modules(path, ".".join((package, *where.parent.parts)))
        bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
        if bad:
            found.append(f"{where.as_posix()} imports {min(bad, key=len)}")
    return found


@pytest.mark.parametrize("folder, package, forbidden", [
    ("quantize", "edgelm.quantize", {"edgelm.export"}),
    ("runtime", "edgelm.runtime", {"edgelm.export", "edgelm.quantize", "edgelm.bundle_graph",
                                   "torch", "transformers", "optimum", "onnx", "sentence_transformers"}),
], ids=["quantize", "runtime"])
def test_no_stage_imports_one_upstream_of_it_anywhere_in_its_source(folder, package, forbidden):
    """Read from the source, so an import inside a function that no other test calls counts too
    (quantize's bundle file I/O is edgelm.bundle_graph, shared with export, not edgelm.export.graph)."""
    assert forbidden_imports(ROOT / folder, package, forbidden) == []


def test_the_import_scan_sees_function_level_relative_and_from_package_imports(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from edgelm.export.graph import save_graph\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.py").write_text("from ...export import graph\n")
    (tmp_path / "p.py").write_text("from edgelm import export\n")
    (tmp_path / "ok.py").write_text("from edgelm.bundle_graph import save_graph\nimport edgelm.exported\n")
    assert forbidden_imports(tmp_path, "edgelm.quantize", {"edgelm.export"}) == [
        "m.py imports edgelm.export.graph", "p.py imports edgelm.export", "sub/r.py imports edgelm.export"]
