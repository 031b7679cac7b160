"""The manifest contract: round trip, version guard, checksum checks, families and naming."""

from __future__ import annotations

import json
import shutil

import pytest

from edgelm.errors import BundleError, ExportError
from edgelm.export.families import family_for, supported_model_types
from edgelm.runtime.kv_layout import KVLayout
from edgelm.runtime.manifest import MANIFEST_NAME, SEAL_NAME, Manifest, check_files, read_manifest


def test_manifest_round_trips_through_json(bundles):
    out, manifest = bundles("llama")
    again = Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest


def test_every_file_is_listed_with_its_hash_and_size(bundles):
    out, manifest = bundles("bert/fill-mask")
    on_disk = {p.name: p.stat().st_size for p in out.iterdir() if p.name not in (MANIFEST_NAME, SEAL_NAME)}
    assert {k: v["bytes"] for k, v in manifest.files.items()} == on_disk
    assert all(len(v["sha256"]) == 64 for v in manifest.files.values())
    assert check_files(out, manifest) == []


def test_damaged_and_missing_files_are_all_reported(bundles, tmp_path):
    src, _ = bundles("gpt2")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    data = bytearray((copy / "tokenizer.json").read_bytes())
    data[10] ^= 1
    (copy / "tokenizer.json").write_bytes(bytes(data))
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError) as err:
        check_files(copy, read_manifest(copy))
    assert "tokenizer.json does not match its sha256" in str(err.value) and "model.onnx is missing" in str(err.value)


def test_newer_format_version_is_refused(bundles, tmp_path):
    src, manifest = bundles("gpt2")
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text(json.dumps({**manifest.to_dict(), "format_version": 99}))
    with pytest.raises(BundleError, match="upgrade edgelm"):
        read_manifest(folder)


def test_a_version_1_decoder_bundle_gets_a_re_export_line_and_a_version_1_encoder_still_reads(bundles, tmp_path):
    _, decoder = bundles("llama")
    _, encoder = bundles("bert/feature-extraction")
    for name, manifest in (("decoder", decoder), ("encoder", encoder)):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST_NAME).write_text(json.dumps({**manifest.to_dict(), "format_version": 1}))
    with pytest.raises(BundleError, match="format_version 1 .* re-export it with `edgelm export`"):
        read_manifest(tmp_path / "decoder")
    assert read_manifest(tmp_path / "encoder").task == "feature-extraction"


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not an edgelm bundle"):
        read_manifest(tmp_path)


def test_unknown_model_type_lists_supported():
    with pytest.raises(ExportError) as err:
        family_for("t5")
    assert all(mt in str(err.value) for mt in supported_model_types())


def test_family_reads_config_aliases():
    from transformers import GPT2Config, LlamaConfig

    gpt2 = family_for("gpt2").kv_layout(GPT2Config(n_layer=3, n_head=4, n_embd=64))
    assert (gpt2.num_layers, gpt2.num_kv_heads, gpt2.head_size) == (3, 4, 16)
    llama = family_for("llama").kv_layout(
        LlamaConfig(num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, hidden_size=64, head_dim=32))
    assert (llama.num_layers, llama.num_kv_heads, llama.head_size) == (2, 2, 32)  # explicit head_dim wins


def test_naming_function_spells_past_and_present():
    layout = KVLayout(num_layers=2, num_kv_heads=1, head_size=4)
    assert layout.past_names()[1] == ("past_key_values.1.key", "past_key_values.1.value")
    assert layout.present_names()[0] == ("present.0.key", "present.0.value")
    assert KVLayout.from_dict(layout.to_dict()) == layout
