"""Write a bundle into a temporary folder beside OUT and rename it into place at the end.

A failure at any step (bad input, a failed parity or accuracy gate, a full disk, Ctrl-C or
SIGTERM) removes the temporary folder, so OUT is either the complete new bundle or untouched.
A process killed outright (SIGKILL, a power cut) cannot clean up; its folders carry its pid, and
the next run on the same OUT removes those of processes no longer alive:

    .OUT.<pid>.<random>.partial   the new bundle while it is written
    .OUT.<pid>.<random>.old       the old bundle between the two renames of a --force replace;
                                  if OUT is missing, the next run puts it back as OUT

Inside the staged section (on the main thread) SIGTERM raises KeyboardInterrupt like Ctrl-C,
and both wait while folders are renamed or removed.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgelm.errors import EdgelmError, StorageError

_FULL_DISK = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_ACTIVE: set[Path] = set()  # this process's staging folders in use now (a dead process's pid may be ours)


def check_out_folder(out: Path, force: bool, error: type[EdgelmError]) -> list[str]:
    """Problems with writing to OUT (reported together with the caller's other problems).

    First tidies what a killed earlier run left beside OUT (remove_stale_staging), so an old
    bundle it had moved aside counts as OUT again.
    """
    remove_stale_staging(out)
    if out.exists() and not force:
        return [f"{out} exists; pass --force (force=True) to replace it or choose another folder"]
    if out.exists() and not out.is_dir():
        return [f"{out} exists and is not a folder; choose another OUT"]
    return []


def remove_stale_staging(out: str | Path) -> None:
    """Remove the staging folders beside OUT of processes no longer alive; restore OUT from an .old one."""
    out = Path(out).expanduser().absolute()
    stale = [p for p in out.parent.glob(f".{glob.escape(out.name)}.*") if _is_stale(p, out.name)]
    olds = sorted(p for p in stale if p.suffix == ".old")
    if olds and not out.exists():  # killed between the two renames of a --force replace
        olds.pop().rename(out)
    for folder in stale:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staged_folder(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside OUT; on success it becomes OUT (replacing it only if FORCE).

    Raises StorageError for a full disk (or a quota or file-size limit) inside the section and
    KeyboardInterrupt("interrupted ...; OUT was left as it was") for Ctrl-C or SIGTERM.
    """
    out = Path(out).expanduser().absolute()
    with _Interrupts() as interrupts:
        interrupts.hold()
        remove_stale_staging(out)
        tmp = _new_stage(out)
        try:
            interrupts.release()  # raises for a signal that came meanwhile
            yield tmp
            interrupts.hold()
            interrupts.deliver()  # one whose KeyboardInterrupt the code it landed in lost
        except BaseException as e:
            interrupts.hold()
            shutil.rmtree(tmp, ignore_errors=True)
            _ACTIVE.discard(tmp)
            signalled = interrupts.take()
            if isinstance(e, KeyboardInterrupt) or signalled:  # also what a library made of the KeyboardInterrupt
                how = f" by {signalled}" if signalled else ""
                raise KeyboardInterrupt(f"interrupted{how}; {out} was left as it was") from None
            if (full := _full_disk(e, out)) is not None:
                raise full from e
            raise
        interrupts.hold()
        _commit(tmp, out)


def _new_stage(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        if (full := _full_disk(e, out)) is not None:
            raise full from e
        raise
    _ACTIVE.add(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a bundle is an ordinary folder
    return tmp


def _commit(tmp: Path, out: Path) -> None:
    """TMP becomes OUT; an existing OUT is moved aside first and removed once TMP is in place."""
    try:
        if out.exists():
            old = tmp.with_suffix(".old")
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _ACTIVE.discard(tmp)


def _is_stale(folder: Path, name: str) -> bool:
    """FOLDER is `.NAME.<pid>.<random>.partial|old` of a process that is gone (or ours, not in use)."""
    named = re.fullmatch(rf"\.{re.escape(name)}\.(\d+)\.[^.]+\.(partial|old)", folder.name)
    if not named or folder.with_suffix(".partial") in _ACTIVE:
        return False
    pid = int(named.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, someone else's
        return False
    return False


def _full_disk(e: BaseException, out: Path) -> StorageError | None:
    """The StorageError to raise for E if it comes from a full disk (or a quota or file-size limit)."""
    code = None if isinstance(e, EdgelmError) else _full_disk_errno(e)
    if code is None:
        return None
    return StorageError(f"the disk is full (or a quota or file-size limit was hit) writing {out}: {os.strerror(code)}; "
                        f"{out} was left as it was; free space and run again")


def _full_disk_errno(e: BaseException | None) -> int | None:
    """ENOSPC, EFBIG or EDQUOT behind E: an OSError in its chain, or a Rust io::Error's text
    (tokenizers raises a plain Exception: "File too large (os error 27)")."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_DISK:
            return e.errno
        for code in _FULL_DISK:
            if f"(os error {code})" in str(e):
                return code
        e = e.__cause__ or e.__context__
    return None


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt(signal name), or wait while held.

    Only default handlers are replaced (an application's own stay), only on the main thread,
    and the previous ones come back on exit. A signal stays pending until deliver() or the
    exit: its KeyboardInterrupt can be lost where Python cannot raise (a __del__, a weakref
    callback: printed as "Exception ignored", which is silenced here). One still pending at a
    successful exit came during the final rename: it is re-sent to the previous handler.
    """

    def __init__(self):
        self._previous: dict[int, object] = {}
        self._holding = False
        self._pending: int | None = None
        self._unraisablehook = None

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
                if signal.getsignal(sig) is default:
                    self._previous[sig] = signal.signal(sig, self._handle)
            self._unraisablehook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._unraisablehook is not None:
            sys.unraisablehook = self._unraisablehook
        if self._pending is not None and value is None:
            signal.raise_signal(self._pending)
        return False

    def _handle(self, signum: int, frame: object) -> None:
        self._pending = signum
        if not self._holding:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    def _unraisable(self, unraisable) -> None:
        if not (issubclass(unraisable.exc_type, KeyboardInterrupt) and self._pending is not None):
            self._unraisablehook(unraisable)

    def hold(self) -> None:
        self._holding = True

    def release(self) -> None:
        self._holding = False
        self.deliver()

    def deliver(self) -> None:
        """Raise the KeyboardInterrupt of a pending signal (held, or lost where it was raised)."""
        if self._pending is not None:
            raise KeyboardInterrupt(signal.Signals(self._pending).name)

    def take(self) -> str | None:
        """The pending signal's name, no longer pending."""
        pending, self._pending = self._pending, None
        return None if pending is None else signal.Signals(pending).name
