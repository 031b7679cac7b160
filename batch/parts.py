"""Resumable output: rows are saved in parts beside OUTPUT as they finish, and merged at the end.

    .OUTPUT.edgelm-batch/          beside OUTPUT (hidden), while a run is unfinished
        run.json                   what the run computes: bundle, task, options, the input files
        lock                       held (flock) by the process writing here
        part-<file>-<first>-<last>-<random>.parquet   finished rows of one input file, with ROW_ID

Each part is written to a temporary name and renamed into place, so a part is either whole or
absent: a killed run (SIGKILL, a power cut) loses only rows not yet in a part, and a temporary
file it left is removed by the next run. A run started again with the same OUTPUT reads the row
ids already in parts and skips them, so no row is computed or written twice. At the end the parts
are merged in row-id order into OUTPUT, written under a temporary name and renamed, and the
folder is removed: OUTPUT exists only complete. A run whose settings differ from the unfinished
one's is refused, as is an existing OUTPUT without --force (force starts over).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgelm.batch.formats import BatchError
from edgelm.batch.tasks import ERROR, ROW_ID
from edgelm.errors import StorageError

SETTINGS = "run.json"
PART_SECONDS = 10.0  # a part is also saved after this long, so slow generation loses little on a kill
KILL_HOOK = "EDGELM_BATCH_TEST_KILL"  # tests only: "N" = SIGKILL after the Nth part, "N.tmp" = before renaming it
_FULL_DISK = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def staging_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.edgelm-batch"


@dataclass(frozen=True)
class OutputFile:
    """One file of OUTPUT: the input files (by index) whose rows it holds, and its format."""

    path: Path
    inputs: tuple[int, ...]
    format: str


class Parts:
    """The staging folder of one OUTPUT while its run is unfinished; use as a context manager."""

    def __init__(self, output: Path, settings: dict, force: bool, part_rows: int):
        self.output = output
        self.folder = staging_folder(output)
        self.settings = settings
        self.force = force
        self.part_rows = part_rows
        self._lock = None
        self._buffers: dict[int, list[pa.Table]] = {}
        self._last_save = time.monotonic()
        self._saved = 0  # parts written by this process
        self.done = np.zeros(0, dtype=np.int64)  # row ids already in parts when the run began

    # -- start -------------------------------------------------------------------------------------
    def __enter__(self) -> "Parts":
        if self.output.exists() and not self.force:
            raise BatchError(f"{self.output} exists (a finished run's output); pass --force to replace it, "
                             "or choose another OUTPUT")
        _storage(lambda: self.folder.mkdir(parents=True, exist_ok=True), self.folder)
        self._take_lock()
        previous = self._read_settings()
        if self.force or previous is None:
            self._clear()
            _storage(lambda: _write_json(self.folder / SETTINGS, self.settings), self.folder)
        elif previous != self.settings:
            raise BatchError(f"{self.folder} holds an unfinished run with other settings ({_differences(previous, self.settings)}); "
                             "run it with the same ones to finish it, or pass --force to start over")
        for stale in self.folder.glob(".tmp-*"):  # half-written by a killed run
            stale.unlink(missing_ok=True)
        self.done = self._done_ids()
        return self

    def __exit__(self, *exc) -> bool:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        return False

    def _take_lock(self) -> None:
        self._lock = open(self.folder / "lock", "a+")
        try:
            import fcntl

            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock on this platform: one run at a time is then the user's affair
            return
        except OSError:
            self._lock.close()
            self._lock = None
            raise BatchError(f"another edgelm batch is writing {self.output} (it holds {self.folder / 'lock'}); "
                             "wait for it to finish or stop it") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()

    def _read_settings(self) -> dict | None:
        path = self.folder / SETTINGS
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # unreadable: it differs from any real settings

    def _clear(self) -> None:
        for path in self.folder.iterdir():
            if path.name != "lock":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def part_files(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    def _done_ids(self) -> np.ndarray:
        ids = []
        for part in self.part_files():
            try:
                ids.append(pq.read_table(part, columns=[ROW_ID]).column(ROW_ID).to_numpy())
            except (pa.ArrowException, OSError) as e:
                raise BatchError(f"cannot read {part} ({e}); delete it and run again (its rows are computed again)") from None
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)

    # -- saving ------------------------------------------------------------------------------------
    def add(self, table: pa.Table, file_index: Callable[[np.ndarray], np.ndarray]) -> None:
        """Buffer TABLE's rows (grouped by the input file FILE_INDEX maps their row ids to); save full parts."""
        ids = table.column(ROW_ID).to_numpy()
        files = file_index(ids)
        for f in np.unique(files):
            rows = table if len(files) and (files == f).all() else table.filter(pa.array(files == f))
            self._buffers.setdefault(int(f), []).append(rows)
        for f in list(self._buffers):
            if sum(t.num_rows for t in self._buffers[f]) >= self.part_rows:
                self._save(f)
        if time.monotonic() - self._last_save >= PART_SECONDS:
            self.save_all()

    def save_all(self) -> None:
        for f in list(self._buffers):
            self._save(f)

    def _save(self, f: int) -> None:
        tables = self._buffers.pop(f, [])
        if not tables:
            return
        table = pa.concat_tables(tables)
        ids = table.column(ROW_ID)
        name = f"part-{f:05d}-{pc.min(ids).as_py():012d}-{pc.max(ids).as_py():012d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.folder / f".tmp-{name}"
        _storage(lambda: pq.write_table(table, tmp), self.folder)
        self._saved += 1
        _test_kill(f"{self._saved}.tmp")
        os.replace(tmp, self.folder / name)
        self._last_save = time.monotonic()
        _test_kill(str(self._saved))

    # -- the end -----------------------------------------------------------------------------------
    def merge(self, outputs: list[OutputFile], file_rows: list[int], is_folder: bool,
              write: Callable[[pa.Table, Path, str], None], empty: Callable[[int], pa.Table]) -> int:
        """Every row id of every input file must be in a part exactly once; write OUTPUT in row-id order, then clean up.

        EMPTY(f) is the (row-less) output table of input file f, for a file that has no rows.
        Returns the number of bad rows in OUTPUT.
        """
        self.save_all()
        by_file: dict[int, list[Path]] = {}
        for part in self.part_files():
            by_file.setdefault(int(part.name.split("-")[1]), []).append(part)
        target = self.folder / ("output" if is_folder else f"output{self.output.suffix}")
        if is_folder:
            _storage(lambda: target.mkdir(exist_ok=True), self.folder)
        starts = np.concatenate([[0], np.cumsum(file_rows)])
        bad = 0
        for out in outputs:
            tables = [self._file_rows(by_file.get(f, []), int(starts[f]), file_rows[f]) if file_rows[f] else empty(f)
                      for f in out.inputs]
            table = _concat(tables, self.output)
            path = target / out.path.name if is_folder else target
            _storage(lambda: write(table, path, out.format), self.folder)
            bad += table.num_rows - table.column(ERROR).null_count
        self._commit(target, is_folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        return bad

    def _file_rows(self, parts: list[Path], start: int, count: int) -> pa.Table:
        """The rows of one input file from its parts, in row-id order, checked complete; ROW_ID dropped."""
        table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None
        ids = table.column(ROW_ID).to_numpy() if table is not None else np.zeros(0, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        keep = np.concatenate([[True], ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=bool)  # one copy of each id
        if keep.sum() != count or (count and (ids[keep][0] != start or ids[keep][-1] != start + count - 1)):
            raise BatchError(f"the parts in {self.folder} hold {int(keep.sum())} of the {count} rows from row {start}; "
                             "a part was removed while the run went on: run the same command again to compute the rest")
        return table.take(pa.array(order[keep])).drop_columns([ROW_ID])

    def _commit(self, target: Path, is_folder: bool) -> None:
        """TARGET becomes OUTPUT (an old OUTPUT, with --force, is moved aside first and removed after)."""
        if not is_folder or not self.output.exists():
            os.replace(target, self.output)
            return
        old = self.folder / "old-output"
        os.replace(self.output, old)
        try:
            os.replace(target, self.output)
        except BaseException:
            os.replace(old, self.output)
            raise


def _concat(tables: list[pa.Table], output: Path) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise BatchError(f"INPUT's files have columns of different types, which one file {output} cannot hold "
                         f"({str(e).splitlines()[0]}); give OUTPUT without a suffix to write a folder, one file per input file") from None


def _differences(previous: dict, current: dict) -> str:
    keys = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    return ", ".join(f"{k}: {_short(previous.get(k))} then, {_short(current.get(k))} now" for k in keys[:3]) or "unreadable run.json"


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _storage(action: Callable[[], object], folder: Path):
    """ACTION, with a full disk (or quota, or file-size limit) as one StorageError saying the work so far is kept."""
    try:
        return action()
    except OSError as e:
        code = e.errno if e.errno in _FULL_DISK else next((c for c in _FULL_DISK if os.strerror(c) in str(e)), None)
        if code is None:  # pyarrow's IOError carries the reason in its text only
            raise
        raise StorageError(f"the disk is full (or a quota or file-size limit was hit) writing {folder}: "
                           f"{os.strerror(code)}; the rows finished so far are kept there: free space and "
                           "run the same command again") from None


def _test_kill(when: str) -> None:
    if os.environ.get(KILL_HOOK) == when:
        os.kill(os.getpid(), signal.SIGKILL)


def file_digest(path: Path) -> str:
    """SHA-256 of a small file (a bundle's manifest.json): the bundle's identity in run.json."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
