"""Text and option input, from the API and the CLI: every bad value gets one GenerationError (one line
on the CLI, exit code 1); odd but valid text (NUL, control characters, a megabyte) runs."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from edgelm.errors import GenerationError
from edgelm.runtime import load
from edgelm.runtime.generator import GeneratorParams


def run_cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgelm.cli", *args], input=stdin, capture_output=True, timeout=120)


def assert_one_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    err = done.stderr.decode("utf-8", "replace").strip().splitlines()
    assert done.returncode == 1, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


@pytest.fixture(scope="module")
def lm(bundles):
    return load(bundles("llama")[0], provider="cpu")


@pytest.fixture(scope="module")
def encoder(bundles):
    return load(bundles("bert/feature-extraction")[0], provider="cpu")


# -- files and arguments on the command line -----------------------------------------------------
def test_embed_file_that_is_binary(bundles, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4)
    assert_one_line(run_cli("embed", str(bundles("bert/feature-extraction")[0]), "--file", str(path)),
                    "holds NUL bytes", "binary file")


def test_embed_file_that_is_not_utf8(bundles, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café au lait\n".encode("latin-1"))
    assert_one_line(run_cli("embed", str(bundles("bert/feature-extraction")[0]), "--file", str(path)),
                    "is not UTF-8 text", "byte 3")


def test_embed_file_that_is_empty_or_blank_and_stdin(bundles, tmp_path):
    folder = str(bundles("bert/feature-extraction")[0])
    (tmp_path / "blank.txt").write_text("\n   \n\t\n")
    assert_one_line(run_cli("embed", folder, "--file", str(tmp_path / "blank.txt")), "holds no texts")
    assert_one_line(run_cli("embed", folder), "no texts")
    done = run_cli("embed", folder, "--file", "-", stdin="\ufeffone\n\ntwo\n".encode("utf-8"))
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 0 and [line.split('"')[3] for line in lines] == ["one", "two"]
    assert_one_line(run_cli("embed", folder, "--file", str(tmp_path / "missing.txt")), "cannot read")


def test_a_command_line_prompt_that_is_not_utf8(bundles):
    assert_one_line(subprocess.run([sys.executable.encode(), b"-m", b"edgelm.cli", b"generate",
                                    str(bundles("llama")[0]).encode(), b"caf\xe9"], capture_output=True, timeout=120),
                    "unpaired surrogate", "pass UTF-8 text")


def test_a_megabyte_prompt_from_stdin_is_refused_in_one_line_or_truncated(bundles):
    folder = str(bundles("llama")[0])
    huge = ("the quick brown fox " * 52_429).encode()  # about 1 MB: too long for one command-line argument
    assert_one_line(run_cli("generate", folder, "-", "--max-new-tokens", "2", stdin=huge), "tokens and the model's limit is")
    done = run_cli("generate", folder, "-", "--max-new-tokens", "2", "--truncate-prompt", stdin=huge)
    assert done.returncode == 0 and done.stderr.decode().startswith("warning: prompt truncated"), done.stderr
    assert_one_line(run_cli("generate", folder, "-", stdin=b"\xff\xfe caf\xe9"), "stdin is not UTF-8 text")


def test_blank_prompts_on_the_command_line(bundles):
    assert_one_line(run_cli("generate", str(bundles("llama")[0]), "  \t "), "the prompt is empty")
    assert_one_line(run_cli("embed", str(bundles("bert/feature-extraction")[0]), " "), "empty or only whitespace")


@pytest.mark.parametrize("option, value, fragment", [
    ("--temperature", "nan", "temperature must be a finite number"),
    ("--temperature", "inf", "temperature must be a finite number"),
    ("--top-p", "0", "top_p must be a number in (0, 1]"),
    ("--top-p", "1.5", "top_p must be a number in (0, 1]"),
    ("--top-p", "nan", "top_p must be a number in (0, 1]"),
    ("--repetition-penalty", "0", "repetition_penalty must be a finite number > 0"),
    ("--repetition-penalty", "-inf", "repetition_penalty must be a finite number > 0"),
    ("--seed", "-1", "seed must be a whole number >= 0"),
])
def test_sampling_options_past_their_bounds_on_the_command_line(bundles, option, value, fragment):
    assert_one_line(run_cli("generate", str(bundles("llama")[0]), "hello", option, value), fragment)


# -- the API -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["a\x00b", "tab\tand\x07bell\x1b[31m", "\u200b\u202e\ufeff zero widths", "emoji 🦊 中文"])
def test_odd_but_valid_text_runs_and_streams_to_the_same_text(lm, encoder, text):
    generated = lm.generate(text, max_new_tokens=6)
    assert "".join(lm.stream(text, max_new_tokens=6)) == generated
    vector = encoder.embed(text)
    assert vector.shape == (encoder.manifest.pooling.dimension,) and np.isfinite(vector).all()


@pytest.mark.parametrize("text", ["\ud800", "ok \udcff ok", "\udfff\ud800"])
def test_unpaired_surrogates_are_one_generation_error(lm, encoder, text):
    with pytest.raises(GenerationError, match="unpaired surrogate"):
        lm.generate(text, max_new_tokens=2)
    with pytest.raises(GenerationError, match="unpaired surrogate"):
        lm.generate([{"role": "user", "content": text}], max_new_tokens=2)
    with pytest.raises(GenerationError, match="text 1 holds an unpaired surrogate"):
        encoder.embed(["fine", text])


def test_a_megabyte_prompt_is_refused_clearly_or_truncated(lm, encoder):
    huge = "the quick brown fox " * 52_429  # about 1 MB
    with pytest.raises(GenerationError, match=r"the prompt has \d+ tokens and the model's limit is"):
        lm.generate(huge, max_new_tokens=2)
    with pytest.warns(UserWarning, match="prompt truncated"):
        assert isinstance(lm.generate(huge, max_new_tokens=2, truncate_prompt=True), str)
    assert encoder.embed(huge).shape == (encoder.manifest.pooling.dimension,)  # encoders cut at max_context


@pytest.mark.parametrize("ids", [[-1], [10**9], [1, 2, 3.0], ["1"], [], [[1], []], [True]])
def test_token_ids_out_of_range_or_of_the_wrong_type(lm, ids):
    gen = lm.generator(max_new_tokens=2)
    with pytest.raises(GenerationError):
        gen.append_tokens(ids)


BAD_OPTIONS = [
    {"temperature": -0.1}, {"temperature": math.nan}, {"temperature": math.inf}, {"temperature": "0.5"},
    {"temperature": True}, {"top_k": -1}, {"top_k": 2.5}, {"top_k": True}, {"top_p": 0}, {"top_p": 1.0001},
    {"top_p": math.nan}, {"top_p": -math.inf}, {"repetition_penalty": 0}, {"repetition_penalty": math.inf},
    {"repetition_penalty": math.nan}, {"max_new_tokens": 0}, {"max_new_tokens": 2.0}, {"max_new_tokens": True},
    {"seed": -1}, {"seed": 1.5}, {"seed": "7"}, {"stop": [""]}, {"stop": [1]}, {"colour": "red"},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=[repr(o) for o in BAD_OPTIONS])
def test_every_bad_option_is_one_generation_error(lm, options):
    with pytest.raises(GenerationError):
        lm.generate("hello", **{"max_new_tokens": 2, **options})


@pytest.mark.parametrize("options", [
    {"temperature": 0}, {"temperature": 1e-6, "seed": 0}, {"temperature": 50.0, "seed": 0}, {"top_k": 1, "temperature": 1.0, "seed": 1},
    {"top_k": 10**6, "temperature": 1.0, "seed": 1}, {"top_p": 1e-9, "temperature": 1.0, "seed": 2}, {"top_p": 1.0},
    {"repetition_penalty": 1e-3}, {"repetition_penalty": 1e3}, {"seed": 2**63}, {"max_new_tokens": 1},
])
def test_options_at_their_bounds_run(lm, options):
    assert isinstance(lm.generate("hello", **{"max_new_tokens": 3, **options}), str)


def test_generator_params_refuse_numpy_nan_and_accept_numpy_numbers():
    with pytest.raises(GenerationError, match="temperature"):
        GeneratorParams(temperature=np.float32("nan"))
    assert GeneratorParams(temperature=np.float64(0.5), top_k=np.int64(3)).top_k == 3
