"""The commands that run bundles (generate, chat, embed, classify, fill-mask, inspect), in a subprocess.

Each command's output is compared with what the Python API gives on the same bundle, and bad
input must end in exactly one `error: ` line on stderr, no traceback, and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgelm.runtime import load

PROMPT = "The quick brown fox"


def run_cli(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m edgelm.cli ARGS`; stdout/stderr decoded as UTF-8 without newline translation."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "edgelm.cli", *map(str, args)], capture_output=True, env=env,
                            input=stdin.encode() if stdin is not None else None)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode("utf-8"),
                                       result.stderr.decode("utf-8"))


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, no traceback, and exactly one stderr line starting 'error: ' (besides 'warning: ' lines)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def llama(bundles):
    folder = bundles("llama")[0]
    return folder, load(folder, provider="cpu")


# -- generate and chat --------------------------------------------------------------------------
def test_generate_raw_prints_exactly_the_generated_text(llama):
    folder, lm = llama
    result = run_cli("generate", folder, PROMPT, "--max-new-tokens", 16, "--provider", "cpu", "--raw")
    assert result.returncode == 0, result.stderr
    assert result.stdout == lm.generate(PROMPT, max_new_tokens=16) + "\n"
    assert result.stderr == ""


def test_generate_defaults_to_the_chat_template_when_the_bundle_has_one(llama):
    folder, lm = llama
    result = run_cli("generate", folder, PROMPT, "--max-new-tokens", 16, "--provider", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout == lm.generate(PROMPT, chat=True, max_new_tokens=16) + "\n"


def test_generate_with_a_seed_is_reproducible_and_equals_the_api(llama):
    folder, lm = llama
    args = ("generate", folder, PROMPT, "--max-new-tokens", 24, "--provider", "cpu", "--raw",
            "--temperature", "0.8", "--top-p", "0.9", "--seed", "7")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert first.stdout == lm.generate(PROMPT, max_new_tokens=24, temperature=0.8, top_p=0.9, seed=7) + "\n"
    other = run_cli(*args[:-1], "8")
    assert other.stdout != first.stdout  # the seed really is used


def test_generate_prints_the_text_before_a_stop_string_and_not_the_stop_string(llama):
    folder, lm = llama
    full = lm.generate(PROMPT, max_new_tokens=24)
    stop = next(full[i:i + 2] for i in range(3, len(full) - 2) if full[i:i + 2].isalpha())
    result = run_cli("generate", folder, PROMPT, "--max-new-tokens", 24, "--provider", "cpu", "--raw", "--stop", stop)
    assert result.returncode == 0, result.stderr
    assert result.stdout == full[:full.index(stop)] + "\n"


def test_generate_json_schema_from_a_file_or_inline_equals_the_api(llama, tmp_path):
    folder, lm = llama
    schema = {"type": "array", "items": {"enum": ["red", "green"]}, "minItems": 1, "maxItems": 3}
    want = lm.generate(PROMPT, json_schema=schema, max_new_tokens=40) + "\n"
    (tmp_path / "colours.json").write_text(json.dumps(schema))
    for given in (str(tmp_path / "colours.json"), json.dumps(schema)):
        result = run_cli("generate", folder, PROMPT, "--max-new-tokens", 40, "--provider", "cpu", "--raw", "--json-schema", given)
        assert result.returncode == 0, result.stderr
        assert result.stdout == want
    json_mode = run_cli("generate", folder, PROMPT, "--max-new-tokens", 80, "--provider", "cpu", "--raw", "--json",
                        "--temperature", 1, "--seed", 3)
    assert json_mode.stdout == lm.generate(PROMPT, json_schema={"type": "object"}, max_new_tokens=80, temperature=1, seed=3) + "\n"


@pytest.mark.parametrize("given, fragment", [("{oops", "neither a file nor valid JSON"), ("[1]", "must be a JSON object"),
                                             ('{"type": "array", "uniqueItems": true}', "uniqueItems")])
def test_a_bad_json_schema_is_one_error_line(llama, given, fragment):
    folder, _ = llama
    assert_one_error_line(run_cli("generate", folder, PROMPT, "--provider", "cpu", "--json-schema", given), fragment)


def test_generate_stats_go_to_stderr_only(llama):
    folder, lm = llama
    result = run_cli("generate", folder, PROMPT, "--max-new-tokens", 8, "--provider", "cpu", "--raw", "--stats")
    assert result.returncode == 0, result.stderr
    assert result.stdout == lm.generate(PROMPT, max_new_tokens=8) + "\n"
    assert "tokens/s" in result.stderr and "provider cpu" in result.stderr


def test_chat_prints_one_reply_per_line_and_reset_forgets_the_history(llama):
    folder, lm = llama
    result = run_cli("chat", folder, "--max-new-tokens", 12, "--provider", "cpu", stdin="hello\n/reset\nhi again\n")
    assert result.returncode == 0, result.stderr
    first = lm.generate([{"role": "user", "content": "hello"}], max_new_tokens=12)
    second = lm.generate([{"role": "user", "content": "hi again"}], max_new_tokens=12)  # /reset: no earlier turn
    # input() writes its "> " prompt to stdout; EOF ends the loop with a newline
    assert result.stdout == f"> {first}\n> > {second}\n> \n"


def test_chat_keeps_the_history_between_turns(llama):
    folder, lm = llama
    result = run_cli("chat", folder, "--max-new-tokens", 12, "--provider", "cpu", "--system", "Be brief.",
                     stdin="hello\nhi again\n/exit\n")
    assert result.returncode == 0, result.stderr
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    first = lm.generate(history, max_new_tokens=12)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "hi again"}]
    second = lm.generate(history, max_new_tokens=12)
    assert result.stdout == f"> {first}\n> {second}\n> "


# -- encoders -----------------------------------------------------------------------------------
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris", "Rain falls softly on the roof."]


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_embed_prints_one_json_line_per_text_equal_to_encoder_embed(bundles):
    folder, manifest = bundles("bert/feature-extraction")
    rows = json_lines(run_cli("embed", folder, *TEXTS, "--provider", "cpu"))
    assert [r["text"] for r in rows] == TEXTS
    want = load(folder, provider="cpu").embed(TEXTS)
    got = np.asarray([r["embedding"] for r in rows])
    assert got.shape == (len(TEXTS), manifest.pooling.dimension)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_embed_reads_texts_from_stdin(bundles):
    folder, _ = bundles("bert/feature-extraction")
    rows = json_lines(run_cli("embed", folder, "--file", "-", "--provider", "cpu", stdin="\n".join(TEXTS) + "\n"))
    assert [r["text"] for r in rows] == TEXTS


def test_classify_prints_the_manifest_labels_and_the_encoder_scores(bundles):
    folder, manifest = bundles("bert/text-classification")
    rows = json_lines(run_cli("classify", folder, *TEXTS, "--top-k", 2, "--provider", "cpu"))
    want = load(folder, provider="cpu").classify(TEXTS, top_k=2)
    assert [r["text"] for r in rows] == TEXTS
    for row, expected in zip(rows, want):
        assert [label["label"] for label in row["labels"]] == [e["label"] for e in expected]
        assert all(label["label"] in manifest.labels for label in row["labels"])
        np.testing.assert_allclose([l["score"] for l in row["labels"]], [e["score"] for e in expected], atol=1e-6)


def test_classify_on_a_token_classifier_prints_each_token(bundles):
    folder, manifest = bundles("bert/token-classification")
    rows = json_lines(run_cli("classify", folder, *TEXTS, "--provider", "cpu"))
    want = load(folder, provider="cpu").classify_tokens(TEXTS)
    for row, expected in zip(rows, want):
        assert [(t["token"], t["label"], t["start"], t["end"]) for t in row["tokens"]] == \
               [(e["token"], e["label"], e["start"], e["end"]) for e in expected]
        assert all(t["label"] in manifest.labels for t in row["tokens"])


def test_fill_mask_prints_the_candidates_of_each_mask(bundles):
    folder, _ = bundles("bert/fill-mask")
    texts = ["The quick brown [MASK] jumps over the lazy dog.", "[MASK] is the capital of France."]
    rows = json_lines(run_cli("fill-mask", folder, *texts, "--top-k", 3, "--provider", "cpu"))
    want = load(folder, provider="cpu").fill_mask(texts, top_k=3)
    assert [r["text"] for r in rows] == texts
    for row, expected in zip(rows, want):
        assert [[c["token_id"] for c in mask] for mask in row["masks"]] == [[c["token_id"] for c in m] for m in expected]
        assert [[c["sequence"] for c in mask] for mask in row["masks"]] == [[c["sequence"] for c in m] for m in expected]


def test_inspect_reports_the_provider_it_resolves_to(llama):
    folder, _ = llama
    result = run_cli("inspect", folder, "--provider", "cpu")
    assert result.returncode == 0, result.stderr
    assert any(line.strip().startswith("provider    cpu") for line in result.stdout.splitlines()), result.stdout


# -- bad input: one line ------------------------------------------------------------------------
def test_generate_on_an_encoder_bundle_is_one_error_line(bundles):
    folder, _ = bundles("bert/feature-extraction")
    assert_one_error_line(run_cli("generate", folder, "hello"), "text-generation", "feature-extraction")


def test_top_p_out_of_range_is_one_error_line(llama):
    folder, _ = llama
    assert_one_error_line(run_cli("generate", folder, "hello", "--top-p", "1.5"), "top_p must be a number in (0, 1]")


def test_empty_prompt_is_one_error_line(llama):
    folder, _ = llama
    assert_one_error_line(run_cli("generate", folder, "", "--provider", "cpu"), "empty")


def test_embed_on_a_decoder_bundle_is_one_error_line(llama):
    folder, _ = llama
    assert_one_error_line(run_cli("embed", folder, "hello"), "embed", "feature-extraction", "text-generation")


def test_chat_on_a_bundle_without_a_template_is_one_error_line(bundles):
    folder, _ = bundles("gpt2")
    assert_one_error_line(run_cli("chat", folder, "--provider", "cpu", stdin="hello\n"), "no chat template", "--raw")


def test_a_prompt_too_long_is_one_error_line_naming_the_flag(bundles):
    folder, _ = bundles("gpt2")
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    assert_one_error_line(run_cli("generate", folder, long_prompt, "--provider", "cpu"), "--truncate-prompt")
    result = run_cli("generate", folder, long_prompt, "--provider", "cpu", "--max-new-tokens", 4, "--truncate-prompt")
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("warning: ")]  # one line, as main() formats it
    assert "Traceback" not in result.stderr and "warnings.warn" not in result.stderr


def test_a_missing_bundle_is_one_error_line(tmp_path):
    assert_one_error_line(run_cli("generate", tmp_path / "nope", "hello", "--provider", "cpu"))


# -- Ctrl-C ---------------------------------------------------------------------------------------
def _started(args, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgelm.cli", *map(str, args)], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def test_ctrl_c_in_generate_ends_at_once_with_one_line_and_no_traceback(smollm2_bundle):
    proc = _started(["generate", smollm2_bundle, "Tell me a long story.", "--max-new-tokens", 4000, "--provider", "cpu"])
    assert proc.stdout.read(8)  # it is streaming a reply
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines() == ["error: interrupted"], err.decode()


def test_ctrl_c_in_chat_ends_it_cleanly_while_waiting_and_while_replying(llama, smollm2_bundle):
    waiting = _started(["chat", llama[0], "--provider", "cpu"], stdin=subprocess.PIPE)
    assert b"chatting with" in waiting.stderr.readline()
    time.sleep(0.5)  # at the "> " prompt
    waiting.send_signal(signal.SIGINT)
    _, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and b"Traceback" not in err, err.decode()

    replying = _started(["chat", smollm2_bundle, "--provider", "cpu", "--max-new-tokens", 4000], stdin=subprocess.PIPE)
    assert b"chatting with" in replying.stderr.readline()
    replying.stdin.write(b"Tell me a very long story.\n")
    replying.stdin.flush()
    assert replying.stdout.read(8)  # "> " and the reply's first bytes
    replying.send_signal(signal.SIGINT)
    _, err = replying.communicate(timeout=30)
    assert replying.returncode == 0 and b"Traceback" not in err, err.decode()
