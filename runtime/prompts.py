"""Named prompts of sentence-embedding bundles, applied as sentence-transformers applies them.

Retrieval models are trained with a prefix per role ("query: ", "passage: "), and a vector
made without it lands elsewhere in the space; sentence-transformers keeps them by name in
config_sentence_transformers.json and export copies them into the manifest (`prompts`,
`default_prompt`). Here, as in `SentenceTransformer.encode(texts, prompt_name=...)`:

    text = prompts[name] + text          # the default prompt's text when no name is given
    prompt_length = tokens of the prompt alone, with special tokens, less a closing special one

`prompt_length` is fed only to graphs whose Pooling leaves the prompt out (include_prompt=False,
the graph input `prompt_length`); every row is padded on the right, so the prompt is its first
`prompt_length` tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from edgelm.errors import GenerationError
from edgelm.runtime.manifest import Manifest

PROMPT_LENGTH = "prompt_length"  # the graph input; int64, shape (1,)


def prompt_text(manifest: Manifest, name: str | None) -> str:
    """The text to prepend for prompt NAME (None: the bundle's default prompt, else none: '')."""
    if name is None:
        name = manifest.default_prompt
        if name is None:
            return ""
    if not isinstance(name, str) or name not in manifest.prompts:
        known = ", ".join(repr(n) for n in manifest.prompts)
        raise GenerationError(f"prompt {name!r} is not one of this bundle's prompts; "
                              + (f"use one of {known}" if known else "it has none (leave prompt out)"))
    return manifest.prompts[name]


def prompt_length(tokenizer: Tokenizer, specials: set[int], text: str) -> int:
    """Leading tokens of every row that TEXT (a prompt) makes, as sentence-transformers counts them
    (Transformer._get_prompt_length): the prompt encoded alone with special tokens, less one when
    its last token is one of SPECIALS (the closing [SEP] or </s> that is not there once a text follows)."""
    if not text:
        return 0
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    return len(ids) - 1 if ids and ids[-1] in specials else len(ids)


def special_ids(tokenizer: Tokenizer, manifest: Manifest) -> set[int]:
    """transformers' all_special_ids: the tokenizer's special added tokens and the manifest's special tokens."""
    ids = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    st = manifest.special_tokens
    return ids | {i for i in (st.bos, st.pad, st.unk, st.mask, *st.eos) if i is not None}
