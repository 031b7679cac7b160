"""Tasks: the names users type, the transformers class loading each, and how to infer one from a checkpoint."""

from __future__ import annotations

# transformers AutoModel class loading each task's head. feature-extraction has none: it loads a
# sentence-transformers model (export/loading.py).
AUTO_CLASS = {
    "text-generation": "AutoModelForCausalLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
}

# Suffix of config.architectures[0] -> the task that head serves.
_ARCHITECTURE_SUFFIX = (
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("Model", "feature-extraction"),
)


def infer_task(architectures: list[str] | None, family_tasks: tuple[str, ...]) -> str:
    """The task a checkpoint's head serves, else its family's first task."""
    for arch in architectures or ():
        for suffix, task in _ARCHITECTURE_SUFFIX:
            if arch.endswith(suffix) and task in family_tasks:
                return task
    return family_tasks[0]
