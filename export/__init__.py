"""edgelm.export: Hugging Face checkpoint (folder or GGUF) -> verified ONNX bundle.

    from edgelm.export import export
    export("./my-gpt2", "./gpt2-bundle")                         # task from config.json
    export("./all-MiniLM-L6-v2", "./minilm", task="feature-extraction")

Needs the `export` extra (torch, transformers, onnx, onnxscript, gguf, accelerate,
sentence-transformers); those are imported only when export() runs.
"""

from edgelm.export.families import supported_model_types
from edgelm.export.pipeline import export

__all__ = ["export", "supported_model_types"]
