"""The error hierarchy every stage raises; the CLI prints any of them as one line.

Messages say what is wrong and what to do about it. Where several things are wrong at once
(a checkpoint missing both its config and its tokenizer), stages collect them and raise one
error listing all of them.
"""

from __future__ import annotations


class EdgelmError(Exception):
    """Base of every error edgelm raises on purpose."""

    def __init__(self, *problems: str):
        if not problems:
            raise TypeError("an EdgelmError needs at least one problem")
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


class BundleError(EdgelmError):
    """A bundle folder is missing, damaged, or of an unsupported format version."""


class ExportError(EdgelmError):
    """A checkpoint cannot be exported as asked (bad source, unsupported model, bad task, OUT exists)."""


class ParityError(ExportError):
    """The exported graph does not reproduce the source model; nothing was written."""


class QuantizeError(EdgelmError):
    """A quantization cannot be done as asked, or its result failed the accuracy gate."""


class StorageError(EdgelmError):
    """Writing a bundle failed for want of space (a full disk, a quota, a file-size limit); nothing was written."""


class GenerationError(EdgelmError):
    """A runtime call got bad arguments (empty prompt, bad sampling value, wrong task)."""


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn pointing at the first caller outside edgelm, so users see their own line."""
    import sys
    import warnings

    frame, level = sys._getframe(1), 2  # level 2 = warn's caller
    while frame is not None and frame.f_globals.get("__name__", "").startswith("edgelm"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
