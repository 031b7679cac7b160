"""Write a bundle into a temporary folder beside OUT and rename it into place at the end.

A failure at any step (bad input, failed parity or accuracy gate, Ctrl-C) removes the
temporary folder, so OUT is either the complete new bundle or untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgelm.errors import EdgelmError


def check_out_folder(out: Path, force: bool, error: type[EdgelmError]) -> list[str]:
    """Problems with writing to OUT (reported together with the caller's other problems)."""
    if out.exists() and not force:
        return [f"{out} exists; pass --force (force=True) to replace it or choose another folder"]
    if out.exists() and not out.is_dir():
        return [f"{out} exists and is not a folder; choose another OUT"]
    return []


@contextmanager
def staged_folder(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside OUT; on success it becomes OUT (replacing it only if FORCE)."""
    out = Path(out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
