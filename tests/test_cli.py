"""The CLI surface: help lists the commands; inspect shows a bundle and checks its files."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from edgelm.cli import cli


def test_help_lists_every_command_with_one_line_each():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("export", "inspect"):
        line = next(l for l in result.output.splitlines() if l.strip().startswith(command + " "))
        assert len(line.split(None, 1)[1]) > 10


def test_inspect_shows_manifest_io_kv_layout_and_checks(bundles):
    out, _ = bundles("llama")
    result = CliRunner().invoke(cli, ["inspect", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for fragment in ("text-generation", "2 layers x 2 KV heads x 16 head size", "past_key_values.{layer}.key",
                     "shared-buffer", "sequence_lengths", ") equal, tokenizer ids equal", "all 5 match the manifest",
                     "conformance.json: 8 vectors at fp32 tolerances"):
        assert fragment in result.output, fragment


def test_inspect_refuses_a_damaged_bundle_in_one_line(bundles, tmp_path):
    src, _ = bundles("bert/text-classification")
    copy = tmp_path / "b"
    shutil.copytree(src, copy)
    (copy / "tokenizer.json").write_text("{}")
    result = CliRunner().invoke(cli, ["inspect", str(copy)])
    assert result.exit_code == 1
    assert result.output.startswith("error: bundle") and "tokenizer.json has" in result.output


def test_export_cli_prints_what_it_did(checkpoints, tmp_path):
    result = CliRunner().invoke(cli, ["export", str(checkpoints("distilgpt2")), str(tmp_path / "b")], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "exported gpt2 (text-generation)" in result.output and "greedy tokens (" in result.output
    assert (tmp_path / "b" / "manifest.json").is_file()
