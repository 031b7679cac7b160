"""Generated corpora for the batch tests, files in each format, OUTPUT read back, and the direct runtime calls
each batch must equal (consecutive runs of batch_size rows of one input file, as edgelm batch forms them)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from edgelm.batch.parts import KILL_HOOK, staging_folder
from edgelm.batch.plan import window_rows
from tests.tiny import CORPUS

WORDS = sorted({w.strip(".,;?").lower() for line in CORPUS for w in line.split()})  # the tiny tokenizers' own words


def texts(n: int, seed: int = 0, longest: int = 14) -> list[str]:
    """N short texts of 1..LONGEST words, the same for the same seed."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(n)]


def table(n: int, seed: int = 0, start: int = 0) -> pa.Table:
    """N rows: id, text, and two columns that OUTPUT must keep."""
    ts = texts(n, seed)
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()), "text": ts,
                     "source": [f"doc-{i % 7}" for i in range(n)], "weight": [round(i * 0.25, 2) for i in range(n)]})


def write(t: pa.Table, path: Path) -> Path:
    """T as PATH's format (JSONL one object per line)."""
    fmt = path.suffix[1:]
    if fmt == "parquet":
        pq.write_table(t, path)
    elif fmt == "csv":
        pcsv.write_csv(t, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in t.to_pylist()), encoding="utf-8")
    return path


def read_output(path: Path) -> list[dict]:
    """OUTPUT's rows as dicts, whatever its format (a CSV's JSON cells and empty cells undone)."""
    if path.is_dir():
        return [r for p in sorted(path.iterdir()) for r in read_output(p)]
    fmt = path.suffix[1:]
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(newlines_in_values=True),
                         convert_options=pcsv.ConvertOptions(strings_can_be_null=True)).to_pylist()
    for row in rows:
        if isinstance(row.get("embedding"), str):
            row["embedding"] = json.loads(row["embedding"])
    return rows


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def expected_embed(encoder, ts: list[str], batch_size: int) -> list[np.ndarray]:
    return [v for c in chunks(ts, window_rows(batch_size)) for v in encoder.embed(c, batch_size=batch_size)]


def expected_classify(encoder, ts: list[str], batch_size: int) -> list[tuple[str, float]]:
    return [(r[0]["label"], r[0]["score"])
            for c in chunks(ts, window_rows(batch_size)) for r in encoder.classify(c, top_k=1, batch_size=batch_size)]


def expected_generate(lm, ts: list[str], batch_size: int, **options) -> list[tuple]:
    return [(c.text, c.finish_reason, c.prompt_tokens, len(c.token_ids))
            for chunk in chunks(ts, batch_size) for c in lm.complete(chunk, **options)]


def results(rows: list[dict], task: str) -> list:
    """The result columns of OUTPUT's rows, shaped like the expected_* lists."""
    if task == "embed":
        return [np.asarray(r["embedding"], dtype=np.float32) for r in rows]
    if task == "classify":
        return [(r["label"], r["score"]) for r in rows]
    return [(r["generated_text"] or "", r["finish_reason"], r["prompt_tokens"], r["completion_tokens"]) for r in rows]


def assert_results_equal(rows: list[dict], expected: list, task: str) -> None:
    got = results(rows, task)
    assert len(got) == len(expected)
    if task == "embed":
        bad = [i for i, (a, b) in enumerate(zip(got, expected)) if not np.array_equal(a, b)]
    else:
        bad = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not bad, f"{len(bad)} rows differ, first {bad[0]}: {got[bad[0]]} != {expected[bad[0]]}"


def batch_env() -> dict[str, str]:
    """This process's environment without the tests' kill hook."""
    return {k: v for k, v in os.environ.items() if k != KILL_HOOK}


def sigterm_once_a_part_is_saved(args: list[str], out: Path, wait: float) -> None:
    """Run the batch command ARGS, SIGTERM it once its first part is saved beside OUT (or after WAIT seconds):
    it must end with exit code 130 and one line saying how to go on, OUTPUT not written, the part kept."""
    stage = staging_folder(out)
    driver = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=batch_env())
    deadline = time.monotonic() + wait
    while driver.poll() is None and time.monotonic() < deadline and not (stage.exists() and any(stage.glob("part-*.parquet"))):
        time.sleep(0.02)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=wait)
    assert driver.returncode == 130, stderr[-2000:]
    assert "interrupted by SIGTERM" in stderr and "run the same command again" in stderr and "Traceback" not in stderr
    assert not out.exists() and any(stage.glob("part-*.parquet"))
