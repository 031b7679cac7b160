"""edgelm.runtime: run bundles with numpy + onnxruntime + tokenizers; never torch.

This package imports nothing from edgelm.export or edgelm.quantize, and no torch,
transformers, optimum or onnx (tests/test_runtime_imports.py proves it).
"""
