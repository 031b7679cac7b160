"""edgelm.runtime must work where torch, transformers, optimum and onnx are not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
        from edgelm.runtime.decoder import DecoderGraph, greedy_continuation
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
