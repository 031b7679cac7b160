"""What a run will do, worked out and checked before any model loads.

Row identity: a row's id is its position in INPUT, counting from 0 (a folder: its files sorted
by name, then each file's rows in order). Parts record it (ROW_ID), resuming skips by it, OUTPUT
comes out in its order and a seeded generation seeds row i with seed + i.

Work is handed out in windows: runs of consecutive pending rows of one input file, WINDOW_ROWS
rounded to whole batches. A window is one call into the runtime (local mode) or one Ray batch
(Ray mode), so both see the same windows. An encoder sorts a window's texts by length and pads
each batch of --batch-size only to its longest (as sentence-transformers sorts a whole corpus):
far less padding than batches of consecutive rows. Generation decodes a window in consecutive
batches of --batch-size; its rows' tokens do not depend on the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edgelm.batch.formats import BAD_TYPE, BatchError, InputFile, input_files, output_format, read_file
from edgelm.batch.parts import OutputFile, file_digest
from edgelm.batch.tasks import ROW_ID, Job, check_columns

WINDOW_ROWS = 256  # rows per runtime call: enough for the length sort to pay, few enough to spread over actors


def window_rows(batch_size: int) -> int:
    """Rows per window for BATCH_SIZE: WINDOW_ROWS rounded down to whole batches, at least one batch."""
    return batch_size * max(1, WINDOW_ROWS // batch_size)


@dataclass
class Summary:
    """What a run that wrote OUTPUT did."""

    output: Path
    rows: int  # in OUTPUT
    computed: int  # by this run
    resumed: int  # done by an earlier, unfinished run and kept
    bad_rows: int  # rows whose `error` is set
    seconds: float  # this run, from start to OUTPUT in place
    where: str = ""  # "local, 2 threads" or "Ray, 2 actors x 1 thread"

    @property
    def rows_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Plan:
    job: Job
    inputs: list[InputFile]
    tables: list[pa.Table]  # each input file's rows, ROW_ID first
    output: Path | None = None
    outputs: list[OutputFile] | None = None
    is_folder: bool = False

    @property
    def total(self) -> int:
        return sum(t.num_rows for t in self.tables)

    @property
    def file_rows(self) -> list[int]:
        return [t.num_rows for t in self.tables]

    def file_index(self, row_ids: np.ndarray) -> np.ndarray:
        """The input file (index) each row id comes from."""
        starts = np.cumsum([0, *self.file_rows])[1:]
        return np.searchsorted(starts, row_ids, side="right")

    def pending(self, done: np.ndarray) -> list[pa.Table]:
        """Each input file's rows whose ids are not in DONE."""
        if not len(done):
            return list(self.tables)
        finished = pa.array(done)
        return [t.filter(pc.invert(pc.is_in(t.column(ROW_ID), value_set=finished))) for t in self.tables]

    def windows(self, done: np.ndarray) -> list[pa.Table]:
        """The pending rows as windows: consecutive runs of window_rows rows, never across two input files."""
        size = window_rows(self.job.batch_size)
        return [table.slice(s, size) for table in self.pending(done) for s in range(0, table.num_rows, size)]

    def empty_output(self, f: int, schema: dict[str, pa.DataType]) -> pa.Table:
        """Input file F's output table when it has no rows: its columns and the added ones."""
        table = self.tables[f].drop_columns([c for c in (ROW_ID, BAD_TYPE) if c in self.tables[f].column_names])
        for name, kind in schema.items():
            table = table.append_column(pa.field(name, kind), pa.array([], kind))
        return table

    def settings(self, bundle: Path) -> dict:
        """What the run computes, for run.json: a resumed run must match it."""
        job = self.job
        return {
            "edgelm_batch": 1,
            "bundle_manifest_sha256": file_digest(bundle / "manifest.json"),
            "task": job.task, "column": job.column, "truncate": job.truncate, "chat": job.chat,
            "stop": list(job.stop), "options": dict(sorted(job.options.items())),
            "inputs": [{"file": str(i.path.resolve()), "size": i.path.stat().st_size, "mtime_ns": i.path.stat().st_mtime_ns}
                       for i in self.inputs],
            "output": [{"file": o.path.name, "format": o.format, "inputs": list(o.inputs)} for o in self.outputs or []],
        }


def plan_files(source: Path, output: Path | None, job: Job, asked_format: str | None = None) -> Plan:
    """Read INPUT's files and check them against the job; lay out OUTPUT's files."""
    inputs = input_files(source)
    if output is not None:
        _check_output_place(source, output)
    plan = Plan(job, inputs, read_tables(inputs, job))
    if output is not None:
        fmt, plan.is_folder = output_format(output, asked_format, inputs)
        plan.output = output
        plan.outputs = _layout(output, fmt if asked_format or not plan.is_folder else None, inputs, plan.is_folder)
    return plan


def plan_table(table: pa.Table, job: Job, row_ids_given: bool = False) -> Plan:
    """A Table (or a pandas DataFrame's) as the only input: rows keep ROW_ID if they have one, else get 0..n-1."""
    check_columns(table.column_names, job, "the table", row_ids_given=row_ids_given)
    if ROW_ID not in table.column_names:
        table = table.add_column(0, ROW_ID, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return Plan(job, [], [table])


def read_tables(inputs: list[InputFile], job: Job) -> list[pa.Table]:
    tables, start = [], 0
    for file in inputs:
        table = read_file(file, job.column)
        if table.num_rows == 0 and job.column not in table.column_names:  # an empty file: no columns to check
            table = table.append_column(job.column, pa.array([], pa.string()))
        check_columns(table.column_names, job, str(file.path))
        tables.append(table.add_column(0, ROW_ID, pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))))
        start += table.num_rows
    if start == 0:
        raise BatchError(f"{inputs[0].path if len(inputs) == 1 else inputs[0].path.parent} holds no rows; nothing to do")
    return tables


def _check_output_place(source: Path, output: Path) -> None:
    src, out = source.resolve(), output.resolve()
    if src == out or (source.is_dir() and src in out.parents):
        raise BatchError(f"OUTPUT {output} is {'INPUT itself' if src == out else 'inside INPUT'}; "
                         "write it somewhere else (a later run would read it as input)")
    if output.exists() and output.is_dir() != (output.suffix.lower() not in (".jsonl", ".csv", ".parquet")):
        raise BatchError(f"{output} exists and is a {'folder' if output.is_dir() else 'file'}; "
                         "choose another OUTPUT")


def _layout(output: Path, fmt: str | None, inputs: list[InputFile], is_folder: bool) -> list[OutputFile]:
    """One file, or in a folder one file per input file: its name with the output format's suffix."""
    if not is_folder:
        return [OutputFile(output, tuple(range(len(inputs))), fmt)]
    files, seen = [], {}
    for i, inp in enumerate(inputs):
        kind = fmt or inp.format
        name = f"{inp.path.stem}.{kind}"
        if name in seen:
            raise BatchError(f"{seen[name].name} and {inp.path.name} would both be written as {output / name}; "
                             "rename one of them or write OUTPUT as one file")
        seen[name] = inp.path
        files.append(OutputFile(output / name, (i,), kind))
    return files
