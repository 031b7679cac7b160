"""Read and write JSONL, CSV and parquet with pyarrow; the format comes from the file's suffix.

A folder is read as its files with a known suffix, sorted by name (names starting with "." or
"_" are skipped, as Spark and Ray write `_SUCCESS` and hidden files there). pyarrow has no JSON
writer and its JSON reader refuses a column whose type changes between rows; JSONL is written
here, and a file pyarrow refuses is read with the json module, the text column's non-string
values becoming null with the reason kept (`BAD_TYPE`), so that such rows are reported, not fatal.
CSV cells are text: the text column is read as text even when it looks like numbers, and list or
struct values (an embedding) are written as JSON text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from edgelm.errors import EdgelmError

SUFFIXES = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
FORMATS = tuple(SUFFIXES.values())
BAD_TYPE = "__bad_type"  # JSONL read by hand: why a row's text value was not a string (null when it was)


class BatchError(EdgelmError):
    """edgelm batch cannot run as asked (bad INPUT or OUTPUT, a refused task, an unfinished run that differs)."""


@dataclass(frozen=True)
class InputFile:
    path: Path
    format: str


def format_of(path: Path) -> str | None:
    """jsonl, csv or parquet from PATH's suffix; None when the suffix is none of them."""
    return SUFFIXES.get(path.suffix.lower())


def input_files(path: Path) -> list[InputFile]:
    """The files INPUT stands for: itself, or a folder's files with a known suffix sorted by name."""
    if not path.exists():
        raise BatchError(f"{path} does not exist; give a .jsonl, .csv or .parquet file or a folder of them")
    if path.is_dir():
        files = [InputFile(p, format_of(p)) for p in sorted(path.iterdir(), key=lambda p: p.name)
                 if p.is_file() and format_of(p) and not p.name.startswith((".", "_"))]
        if not files:
            raise BatchError(f"{path} holds no .jsonl, .csv or .parquet files; put the input files in it")
        return files
    fmt = format_of(path)
    if fmt is None:
        raise BatchError(_unknown_suffix(path))
    return [InputFile(path, fmt)]


def output_format(path: Path, asked: str | None, inputs: list[InputFile]) -> tuple[str, bool]:
    """(format, is_folder) of OUTPUT: a file by its suffix, else a folder in ASKED or the first input's format."""
    fmt = format_of(path)
    if fmt is not None:
        if asked is not None and asked != fmt:
            raise BatchError(f"{path} ends in {path.suffix} but --output-format is {asked}; drop one of them")
        return fmt, False
    if path.suffix and not path.is_dir():
        raise BatchError(_unknown_suffix(path) + " (or no suffix for a folder)")
    return asked or inputs[0].format, True


def _unknown_suffix(path: Path) -> str:
    return f"cannot tell the format of {path} from its suffix {path.suffix or '(none)'!r}; use .jsonl, .csv or .parquet"


# -- reading ---------------------------------------------------------------------------------------
def read_file(file: InputFile, text_column: str) -> pa.Table:
    """FILE as a table; one clear error when it cannot be read."""
    try:
        if file.format == "parquet":
            return pq.read_table(file.path)
        if file.format == "csv":
            convert = pcsv.ConvertOptions(column_types={text_column: pa.string()})
            parse = pcsv.ParseOptions(newlines_in_values=True)  # a quoted text may span lines
            return pcsv.read_csv(file.path, parse_options=parse, convert_options=convert)
        return _read_jsonl(file.path, text_column)
    except (pa.ArrowException, OSError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BatchError(f"cannot read {file.path} as {file.format}: {first}") from None


def _read_jsonl(path: Path, text_column: str) -> pa.Table:
    try:
        return pjson.read_json(path)
    except pa.ArrowInvalid:
        pass  # a column's type changes between rows, or a line is not JSON: read by hand, which says which
    rows = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BatchError(f"line {number} of {path} is not JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(row, dict):
                raise BatchError(f"line {number} of {path} is not a JSON object; write one object per line")
            rows.append(row)
    if rows and not any(text_column in row for row in rows):
        names = ", ".join(dict.fromkeys(k for row in rows for k in row))
        raise BatchError(f"{path} has no column {text_column!r} (its columns: {names}); pass --column NAME")
    bad = [_json_type_problem(row.get(text_column)) for row in rows]
    for row, problem in zip(rows, bad):
        if problem is not None:
            row[text_column] = None
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise BatchError(f"{_mixed_column(rows)} of {path} holds values of different JSON types; give it one type "
                         "(only the text column may mix them: its rows that are not text are reported as bad rows)") from None
    if any(b is not None for b in bad):
        table = table.append_column(BAD_TYPE, pa.array(bad, pa.string()))
    return table


def _mixed_column(rows: list[dict]) -> str:
    kinds: dict[str, set] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, set()).add(float if type(value) is int else type(value))
    mixed = [k for k, v in kinds.items() if len(v) > 1]
    return f"column {mixed[0]!r}" if mixed else "a column"


def _json_type_problem(value) -> str | None:
    if value is None or isinstance(value, str):
        return None
    kind = {bool: "boolean", int: "number", float: "number", list: "list", dict: "object"}.get(type(value), type(value).__name__)
    return f"not text (a JSON {kind})"


# -- writing ---------------------------------------------------------------------------------------
def write_file(table: pa.Table, path: Path, fmt: str) -> None:
    """TABLE to PATH in FMT (the caller renames it into place)."""
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pcsv.write_csv(_flat_for_csv(table), path)
    else:
        _write_jsonl(table, path)


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """List, struct and map columns as JSON text: a CSV cell holds one value."""
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            texts = [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in table.column(i).to_pylist()]
            table = table.set_column(i, field.name, pa.array(texts, pa.string()))
    return table


def _write_jsonl(table: pa.Table, path: Path, rows_per_slice: int = 4096) -> None:
    """One JSON object per line; floats as Python writes them (a float32 reads back exactly)."""
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, table.num_rows, rows_per_slice):
            for row in table.slice(start, rows_per_slice).to_pylist():
                out.write(json.dumps(row, ensure_ascii=False, default=str))
                out.write("\n")
