"""Bad input: one clear line, a non-zero exit, and nothing left at OUT (nor a staging folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgelm.errors import ExportError, ParityError


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgelm.cli", *map(str, args)], capture_output=True, text=True)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "a staging folder was left behind"


@pytest.fixture
def broken(tmp_path, checkpoints):
    """A copy of the tiny gpt2 checkpoint that a test may damage."""
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints("gpt2"), folder)
    return folder


def test_missing_source(tmp_path):
    result = run_cli("export", tmp_path / "nope", tmp_path / "out")
    assert_one_line_error(result, "does not exist")
    assert_nothing_written(tmp_path / "out")


def test_missing_config_json(broken, tmp_path):
    (broken / "config.json").unlink()
    result = run_cli("export", broken, tmp_path / "out")
    assert_one_line_error(result, "no config.json")
    assert_nothing_written(tmp_path / "out")


def test_unreadable_config_json(broken, tmp_path):
    (broken / "config.json").write_text("{not json")
    assert_one_line_error(run_cli("export", broken, tmp_path / "out"), "config.json is not readable JSON")
    assert_nothing_written(tmp_path / "out")


def test_missing_weights(broken, tmp_path):
    (broken / "model.safetensors").unlink()
    assert_one_line_error(run_cli("export", broken, tmp_path / "out"), "no weights")
    assert_nothing_written(tmp_path / "out")


def test_unsupported_model_type_lists_the_supported_ones(broken, tmp_path):
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    from edgelm.export import supported_model_types

    assert_one_line_error(run_cli("export", broken, tmp_path / "out"), "'t5' is not supported",
                          ", ".join(supported_model_types()))
    assert_nothing_written(tmp_path / "out")


def test_task_that_does_not_fit_the_model(broken, tmp_path):
    result = run_cli("export", broken, tmp_path / "out", "--task", "fill-mask")
    assert_one_line_error(result, "task 'fill-mask' does not fit model_type 'gpt2'", "text-generation")
    assert_nothing_written(tmp_path / "out")


def test_unknown_task_name_is_refused_by_the_cli(broken, tmp_path):
    result = run_cli("export", broken, tmp_path / "out", "--task", "translation")
    assert result.returncode == 2 and "translation" in result.stderr
    assert_nothing_written(tmp_path / "out")


def test_missing_tokenizer(broken, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (broken / name).unlink(missing_ok=True)
    assert_one_line_error(run_cli("export", broken, tmp_path / "out"), "no tokenizer")
    assert_nothing_written(tmp_path / "out")


def test_existing_out_is_refused_and_kept(broken, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(run_cli("export", broken, out), "exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"


def test_all_problems_are_reported_at_once(broken, tmp_path):
    (broken / "model.safetensors").unlink()
    (broken / "tokenizer.json").unlink()
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError) as err:
        from edgelm.export import export

        export(broken, tmp_path / "out", progress=False)
    assert len(err.value.problems) == 3  # weights, tokenizer, OUT


def test_non_gguf_file_is_refused(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"\0" * 16)
    assert_one_line_error(run_cli("export", f, tmp_path / "out"), "not .gguf")


def test_corrupt_gguf_file_is_refused(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 64)
    assert_one_line_error(run_cli("export", f, tmp_path / "out"), "cannot read GGUF")
    assert_nothing_written(tmp_path / "out")


def test_failed_parity_writes_nothing_and_keeps_an_old_bundle(checkpoints, tmp_path, monkeypatch):
    """Force replaces OUT only after verification passed: a failing check leaves OUT as it was."""
    import edgelm.export.verify as verify
    from edgelm.export import export

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous bundle")
    monkeypatch.setattr(verify, "ATOL", -1.0)  # no graph can meet a negative tolerance
    with pytest.raises(ParityError, match="exceeds tolerance"):
        export(checkpoints("gpt2"), out, force=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert not list(tmp_path.glob(".out.*"))


def copy_of(checkpoints, name: str, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints(name), folder)
    return folder


def test_embedding_a_causal_gemma3_is_refused_naming_the_decoder_it_is(checkpoints, tmp_path):
    """gemma3_text embeds only with bidirectional attention (EmbeddingGemma); a causal one is the gemma3 decoder."""
    folder = copy_of(checkpoints, "gemma3_text/feature-extraction", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "use_bidirectional_attention": False}))
    assert_one_line_error(run_cli("export", folder, tmp_path / "out", "--task", "feature-extraction"),
                          "'feature-extraction'", "gemma3_text", "decoder")
    assert_nothing_written(tmp_path / "out")


def test_a_config_that_disagrees_with_the_weights_is_one_line(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "electra/text-classification", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "embedding_size": 24}))  # the weights hold 16
    assert_one_line_error(run_cli("export", folder, tmp_path / "out"), "transformers cannot load")
    assert_nothing_written(tmp_path / "out")


def test_a_head_missing_from_the_weights_is_refused_not_exported_at_random(checkpoints, tmp_path):
    folder = copy_of(checkpoints, "modernbert/feature-extraction", tmp_path)  # the bare encoder's weights
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["ModernBertForMaskedLM"]}))
    assert_one_line_error(run_cli("export", folder, tmp_path / "out"), "config and weights disagree",
                          "--task feature-extraction")
    assert_nothing_written(tmp_path / "out")


def test_a_sentence_transformers_module_the_bundle_cannot_carry_is_one_line(checkpoints, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import LSTM, Pooling, Transformer

    transformer = Transformer(str(checkpoints("bert/feature-extraction")))
    SentenceTransformer(modules=[transformer, LSTM(32, 16), Pooling(32)], device="cpu").save(str(tmp_path / "st"))
    assert_one_line_error(run_cli("export", tmp_path / "st", tmp_path / "out"), "module 1 (LSTM) cannot be carried")
    assert_nothing_written(tmp_path / "out")
