"""edgelm batch in local mode: every format in and out, folders, the three tasks against direct runtime
calls, bad rows, resuming after a SIGKILL, and the refusals (one line each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from edgelm.batch import BatchError, run
from edgelm.batch.parts import KILL_HOOK, Parts, staging_folder
from edgelm.batch.tasks import choose_task
from edgelm.cli import cli
from edgelm.runtime import load
from tests import batch_corpus as corpus

ROWS = 2000
FORMATS = ("jsonl", "csv", "parquet")


def cli_run(*args) -> Result:
    return CliRunner().invoke(cli, ["batch", *map(str, args)])


def assert_one_line(result, *fragments) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_keeps_input(rows: list[dict], source: pa.Table) -> None:
    """Every input column, row for row, in input order (a CSV reads numbers back as numbers)."""
    expected = source.to_pylist()
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        assert {k: got[k] for k in want} == want


# -- formats and tasks against the runtime --------------------------------------------------------------
def test_every_format_in_and_out_equals_encoder_embed(embedder, tmp_path):
    source = corpus.table(ROWS)
    encoder = load(embedder)
    expected = corpus.expected_embed(encoder, source.column("text").to_pylist(), 32)
    for fmt_in in FORMATS:
        path = corpus.write(source, tmp_path / f"in.{fmt_in}")
        for fmt_out in FORMATS:
            out = tmp_path / f"{fmt_in}-to.{fmt_out}"
            summary = run(embedder, path, out, progress=False)
            assert (summary.rows, summary.computed, summary.resumed, summary.bad_rows) == (ROWS, ROWS, 0, 0)
            rows = corpus.read_output(out)
            assert_keeps_input(rows, source)
            corpus.assert_results_equal(rows, expected, "embed")
            assert all(r["error"] is None for r in rows)
            assert not staging_folder(out).exists()
    schema = pq.read_schema(tmp_path / "parquet-to.parquet")
    assert schema.names == ["id", "text", "source", "weight", "embedding", "error"]
    assert schema.field("embedding").type == pa.list_(pa.float32())


def test_classify_equals_encoder_classify(classifier, tmp_path):
    source = corpus.table(ROWS, seed=1)
    out = tmp_path / "labels.csv"
    result = cli_run(classifier, corpus.write(source, tmp_path / "in.parquet"), out, "--batch-size", 64)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}: {ROWS:,} rows;" in result.stderr and "local," in result.stderr
    rows = corpus.read_output(out)
    assert_keeps_input(rows, source)
    expected = corpus.expected_classify(load(classifier), source.column("text").to_pylist(), 64)
    corpus.assert_results_equal(rows, expected, "classify")
    assert {r["label"] for r in rows} <= {"NEGATIVE", "POSITIVE", "NEUTRAL"}


def test_greedy_generate_equals_the_runtime(decoder, tmp_path):
    source = corpus.table(ROWS, seed=2)
    out = tmp_path / "generated.jsonl"
    result = cli_run(decoder, corpus.write(source, tmp_path / "in.csv"), out, "--max-new-tokens", 6, "--batch-size", 16)
    assert result.exit_code == 0, result.stderr
    rows = corpus.read_output(out)
    assert_keeps_input(rows, source)
    lm = load(decoder)
    ts = source.column("text").to_pylist()
    corpus.assert_results_equal(rows, corpus.expected_generate(lm, ts, 16, max_new_tokens=6), "generate")
    assert [r["generated_text"] for r in rows[:5]] == [lm.generate(t, max_new_tokens=6) for t in ts[:5]]
    assert {r["finish_reason"] for r in rows} <= {"eos", "length"}


def test_json_schema_makes_every_generated_row_a_document_of_the_schema(decoder, tmp_path):
    import jsonschema

    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                               "ok": {"type": "boolean"}}, "required": ["n", "ok"], "additionalProperties": False}
    source = corpus.table(40, seed=4)
    done = run(decoder, corpus.write(source, tmp_path / "in.jsonl"), tmp_path / "out.jsonl", batch_size=16, progress=False,
               json_schema=schema, max_new_tokens=40, temperature=1.0, seed=2)
    rows = corpus.read_output(done.output)
    assert [r["finish_reason"] for r in rows] == ["eos"] * 40
    for r in rows:
        jsonschema.validate(json.loads(r["generated_text"]), schema)
    lm = load(decoder)
    text = source.column("text").to_pylist()[3]
    assert rows[3]["generated_text"] == lm.generate(text, json_schema=schema, max_new_tokens=40, temperature=1.0, seed=5)


def test_seeded_sampling_is_per_row_whatever_the_batching(decoder, tmp_path):
    """Row i with seed S gives what lm.generate(text_i, seed=S + i) gives, in any batch and on resume."""
    source = corpus.table(120, seed=3)
    path = corpus.write(source, tmp_path / "in.parquet")
    options = {"max_new_tokens": 8, "temperature": 1.3, "top_k": 0, "seed": 7}
    by_8 = corpus.read_output(run(decoder, path, tmp_path / "by8.parquet", batch_size=8, progress=False, **options).output)
    by_64 = corpus.read_output(run(decoder, path, tmp_path / "by64.parquet", batch_size=64, progress=False, **options).output)
    assert by_8 == by_64
    lm = load(decoder)
    ts = source.column("text").to_pylist()
    for i in (0, 1, 57, 119):
        assert by_8[i]["generated_text"] == lm.generate(ts[i], max_new_tokens=8, temperature=1.3, top_k=0, seed=7 + i)
    assert len({r["generated_text"] for r in by_8}) > 100  # sampled, not one text for all


def test_folders_in_and_out(embedder, tmp_path):
    """A folder's files in name order give the row ids; batches never mix two files; OUTPUT a file or a folder."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    parts = [corpus.table(n, seed=10 + i, start=s) for i, (n, s) in enumerate(((700, 0), (45, 700), (900, 745)))]
    for t, name in zip(parts, ("a.parquet", "b.jsonl", "c.csv")):
        corpus.write(t, folder / name)
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.txt").write_text("not an input")
    encoder = load(embedder)
    expected = [v for t in parts for v in corpus.expected_embed(encoder, t.column("text").to_pylist(), 50)]
    one_file = run(embedder, folder, tmp_path / "all.parquet", batch_size=50, progress=False)
    rows = corpus.read_output(one_file.output)
    assert [r["id"] for r in rows] == list(range(1645))
    corpus.assert_results_equal(rows, expected, "embed")
    mirrored = run(embedder, folder, tmp_path / "out", batch_size=50, progress=False)
    assert sorted(p.name for p in mirrored.output.iterdir()) == ["a.parquet", "b.jsonl", "c.csv"]
    assert corpus.read_output(mirrored.output) == rows
    as_parquet = run(embedder, folder, tmp_path / "pq", batch_size=50, output_format="parquet", progress=False)
    assert sorted(p.name for p in as_parquet.output.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]


def test_tables_and_dataframes_come_back_with_results(classifier):
    source = corpus.table(300, seed=4)
    expected = corpus.expected_classify(load(classifier), source.column("text").to_pylist(), 32)
    table = run(classifier, source, progress=False)
    assert table.column_names == [*source.column_names, "label", "score", "error"]
    corpus.assert_results_equal(table.to_pylist(), expected, "classify")
    frame = run(classifier, source.to_pandas(), progress=False)
    assert frame.to_pylist() == table.to_pylist()


# -- bad rows -----------------------------------------------------------------------------------------
def test_bad_rows_are_recorded_and_do_not_stop_the_run(embedder, decoder, tmp_path):
    good = corpus.texts(8, seed=5)
    lines = [{"id": 0, "text": good[0]}, {"id": 1, "text": ""}, {"id": 2, "text": "   \n"}, {"id": 3, "text": None},
             {"id": 4}, {"id": 5, "text": 17}, {"id": 6, "text": ["a", "list"]}, {"id": 7, "text": good[1]},
             {"id": 8, "text": " ".join(["fox"] * 300)}, {"id": 9, "text": good[2]}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = run(embedder, path, tmp_path / "out.parquet", batch_size=4, progress=False)  # windows of 256 rows
    rows = corpus.read_output(summary.output)
    reasons = [r["error"] for r in rows]
    assert reasons[0] is None and reasons[7] is None and reasons[9] is None
    assert reasons[1] == "empty text" and reasons[2] == "only whitespace"
    assert reasons[3] == reasons[4] == "no text (null)"
    assert reasons[5] == "not text (a JSON number)" and reasons[6] == "not text (a JSON list)"
    assert reasons[8].startswith("too long: 302 tokens, more than the bundle's max_context of 64")
    assert summary.bad_rows == 7 and all(r["embedding"] is None for r, e in zip(rows, reasons) if e)
    encoder = load(embedder)  # one window: its good texts run in one call
    vectors = encoder.embed([good[0], good[1], good[2]], batch_size=4)
    assert np.array_equal(np.float32([rows[i]["embedding"] for i in (0, 7, 9)]), vectors)
    cut = run(embedder, path, tmp_path / "cut.parquet", truncate_prompt=True, progress=False)
    assert corpus.read_output(cut.output)[8]["error"] is None and cut.bad_rows == 6
    generated = corpus.read_output(run(decoder, path, tmp_path / "gen.jsonl", max_new_tokens=3, progress=False).output)
    tokens = len(load(decoder).encode(lines[8]["text"]))
    assert generated[8]["error"] == (f"too long: the prompt has {tokens} tokens and the bundle's max_context is 128, leaving "
                                     "no room to generate (shorten it, or pass --truncate-prompt to drop its oldest tokens)")
    assert generated[9]["generated_text"] is not None and generated[9]["prompt_tokens"] > 0


def test_a_column_that_is_not_text_is_bad_rows_not_a_crash(classifier, tmp_path):
    path = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2, None]}), path)
    rows = corpus.read_output(run(classifier, path, tmp_path / "out.jsonl", progress=False).output)
    assert [r["error"] for r in rows] == ["not text (the column holds int64)"] * 2 + ["no text (null)"]
    csv = tmp_path / "digits.csv"
    csv.write_text("text,n\n123,1\n,2\n")  # a CSV cell is text, even when it looks like a number
    rows = corpus.read_output(run(classifier, csv, tmp_path / "digits.parquet", progress=False).output)
    assert rows[0]["text"] == "123" and rows[0]["error"] is None and rows[1]["error"] == "empty text"


# -- resuming -----------------------------------------------------------------------------------------
def batch_process(*args, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != KILL_HOOK}
    if kill:
        env[KILL_HOOK] = kill
    return subprocess.run([sys.executable, "-m", "edgelm.cli", "batch", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_a_sigkilled_run_resumes_and_writes_every_row_once(decoder, tmp_path):
    source = corpus.table(3000, seed=6)
    path = corpus.write(source, tmp_path / "in.parquet")
    out = tmp_path / "out.jsonl"
    args = (decoder, path, out, "--max-new-tokens", 5, "--batch-size", 16, "--part-rows", 250)
    first = batch_process(*args, kill="3")  # SIGKILL right after the third part is in place
    assert first.returncode == -signal.SIGKILL
    stage = staging_folder(out)
    assert not out.exists() and len(list(stage.glob("part-*.parquet"))) == 3
    second = batch_process(*args, kill="2.tmp")  # SIGKILL with a part half-written (its temporary file)
    assert second.returncode == -signal.SIGKILL and len(list(stage.glob(".tmp-*"))) == 1
    assert len(list(stage.glob("part-*.parquet"))) == 4
    changed = batch_process(*args[:3], "--max-new-tokens", 9)
    assert changed.returncode == 1 and "holds an unfinished run with other settings (options:" in changed.stderr
    last = batch_process(*args)
    assert last.returncode == 0, last.stderr
    # a part is saved once it holds 250 rows or more, in whole windows (256 rows): 4 parts
    assert "3,000 rows" in last.stderr and "1,024 kept from an earlier run; 1,976 computed" in last.stderr
    assert not stage.exists()
    rows = corpus.read_output(out)
    assert [r["id"] for r in rows] == list(range(3000))  # each row once, in input order
    expected = corpus.expected_generate(load(decoder), source.column("text").to_pylist(), 16, max_new_tokens=5)
    corpus.assert_results_equal(rows, expected, "generate")


def test_local_workers_give_the_same_rows_as_one(embedder, decoder, tmp_path):
    """Workers finish windows in any order; the output is the same, in input order."""
    source = corpus.table(ROWS, seed=8)
    path = corpus.write(source, tmp_path / "in.parquet")
    one = run(embedder, path, tmp_path / "one.parquet", workers=1, progress=False)
    three = run(embedder, path, tmp_path / "three.parquet", workers=3, threads=1, part_rows=300, progress=False)
    assert one.where.startswith("local, 1 worker x ")
    assert three.where == "local, 3 workers x 1 thread"
    rows = corpus.read_output(three.output)
    assert [r["id"] for r in rows] == list(range(ROWS))
    assert corpus.read_output(one.output) == rows
    texts = corpus.texts(700, seed=9)  # a Table back: in its own order
    table = run(decoder, pa.table({"text": texts}), workers=2, max_new_tokens=4, progress=False)
    assert table.column("text").to_pylist() == texts
    assert table.column("generated_text").to_pylist() == [r[0] for r in corpus.expected_generate(load(decoder), texts, 32, max_new_tokens=4)]


def test_sigterm_with_local_workers_saves_the_finished_rows_and_resumes(decoder, tmp_path):
    source = corpus.table(ROWS, seed=10)
    path = corpus.write(source, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "edgelm.cli", "batch", str(decoder), str(path), str(out), "--workers", "2",
            "--max-new-tokens", "40", "--batch-size", "16", "--part-rows", "100"]
    corpus.sigterm_once_a_part_is_saved(args, out, wait=120)
    finished = subprocess.run(args, capture_output=True, text=True, timeout=300, env=corpus.batch_env())
    assert finished.returncode == 0 and "kept from an earlier run" in finished.stderr, finished.stderr[-2000:]
    rows = corpus.read_output(out)
    assert [r["id"] for r in rows] == list(range(ROWS))
    expected = corpus.expected_generate(load(decoder), source.column("text").to_pylist(), 16, max_new_tokens=40)
    corpus.assert_results_equal(rows, expected, "generate")


def test_force_starts_over_and_replaces_output(classifier, tmp_path):
    path = corpus.write(corpus.table(200, seed=7), tmp_path / "in.csv")
    out = tmp_path / "out"
    run(classifier, path, out, progress=False)
    assert_one_line(cli_run(classifier, path, out), f"{out} exists (a finished run's output); pass --force")
    again = run(classifier, path, out, force=True, batch_size=7, progress=False)
    assert again.computed == 200 and again.resumed == 0 and sorted(p.name for p in out.iterdir()) == ["in.csv"]


# -- refusals -----------------------------------------------------------------------------------------
def test_refusals_are_one_line(embedder, classifier, decoder, tmp_path):
    path = corpus.write(corpus.table(20), tmp_path / "in.jsonl")
    clash = corpus.write(corpus.table(5).append_column("error", pa.array(["x"] * 5)), tmp_path / "clash.parquet")
    assert_one_line(cli_run(embedder, tmp_path / "in.txt", tmp_path / "o.jsonl"), "in.txt does not exist")
    (tmp_path / "in.txt").write_text("a\n")
    assert_one_line(cli_run(embedder, tmp_path / "in.txt", tmp_path / "o.jsonl"),
                    "cannot tell the format of", "use .jsonl, .csv or .parquet")
    assert_one_line(cli_run(embedder, path, tmp_path / "o.xlsx"), "from its suffix '.xlsx'")
    assert_one_line(cli_run(embedder, path, tmp_path / "o.jsonl", "--column", "body"),
                    "has no column 'body' (its columns: id, text, source, weight); pass --column NAME")
    assert_one_line(cli_run(embedder, clash, tmp_path / "o.jsonl"), "already has a column named 'error'")
    assert_one_line(cli_run(embedder, path, tmp_path / "o.jsonl", "--task", "generate"),
                    "--task generate needs a text-generation bundle", "use --task embed")
    assert_one_line(cli_run(classifier, path, tmp_path / "o.jsonl", "--temperature", "0.5"),
                    "--temperature applies to --task generate only")
    assert_one_line(cli_run(decoder, path, tmp_path / "o.jsonl", "--top-p", "0"), "top_p")
    with pytest.raises(BatchError, match="workers must be a whole number >= 1, got 0"):
        run(embedder, path, tmp_path / "o.jsonl", workers=0)
    assert_one_line(cli_run(embedder, path, path), "is INPUT itself")
    assert_one_line(cli_run(embedder, tmp_path, tmp_path / "out"), "inside INPUT")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_one_line(cli_run(embedder, empty, tmp_path / "o.jsonl"), "holds no rows")
    with pytest.raises(BatchError, match="is a fill-mask bundle; edgelm batch runs feature-extraction"):
        choose_task("fill-mask", None, "b")
    assert not list(tmp_path.glob(".*edgelm-batch"))


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(embedder, tmp_path):
    path = corpus.write(corpus.table(20), tmp_path / "in.jsonl")
    out = tmp_path / "o.parquet"
    with Parts(out, {"edgelm_batch": 1}, force=False, part_rows=10):
        assert_one_line(cli_run(embedder, path, out), "another edgelm batch is writing", "wait for it")
