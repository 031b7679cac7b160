"""edgelm: ship transformer language models to edge boxes as verified ONNX bundles.

Stages (each its own subpackage, data flows one way):
    edgelm.export   -- Hugging Face checkpoint -> ONNX bundle (needs the `export` extra)
    edgelm.quantize -- bundle -> smaller bundle that passed an accuracy gate
    edgelm.runtime  -- bundle -> text, vectors, labels (numpy + onnxruntime + tokenizers only)

Importing this package imports none of them.
"""

__version__ = "0.4.0"
