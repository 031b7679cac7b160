"""Write the bundle's tokenizer: tokenizer.json (padding and truncation cleared) and the chat template.

Some checkpoints ship a tokenizer.json that pads every input to a fixed length (all-MiniLM-L6-v2
pads to 128): a runtime that trusts it computes wrong embeddings, and slower. The bundle's
tokenizer.json therefore encodes one text exactly; the runtime pads per batch and truncates to
the manifest's max_context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_FILE = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def write_tokenizer(tokenizer: Any, bundle_dir: Path) -> str | None:
    """Write tokenizer.json (and chat_template.jinja when there is one); returns the template's name."""
    from tokenizers import Tokenizer

    clean = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: leave the caller's alone
    clean.no_padding()
    clean.no_truncation()
    clean.save(str(bundle_dir / TOKENIZER_FILE))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template.strip():
        (bundle_dir / CHAT_TEMPLATE_FILE).write_text(template)
        return CHAT_TEMPLATE_FILE
    return None
