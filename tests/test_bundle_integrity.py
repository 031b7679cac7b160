"""A damaged, tampered or unsafe bundle is refused in one line, by the API (BundleError) and the CLI.

Each case copies a tiny bundle, breaks one thing, and where the break would otherwise be caught
first by the checksums or the manifest's seal, re-records them, so the case tests its own check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgelm.errors import BundleError, GenerationError
from edgelm.runtime import load
from edgelm.runtime.manifest import MANIFEST_NAME, SEAL_NAME, hash_files, read_manifest, seal


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgelm.cli", *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_refused(folder: Path, *fragments: str, command: tuple[str, ...] = ("inspect",), error=BundleError) -> None:
    """load() raises ERROR naming FRAGMENTS, and the CLI prints them in one line with exit code 1."""
    with pytest.raises(error) as caught:
        load(folder, provider="cpu")
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)
    done = run_cli(*command, folder) if command[0] == "inspect" else run_cli(command[0], folder, *command[1:])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def edit_manifest(folder: Path, change) -> None:
    """Apply CHANGE to the manifest's dict, then re-record files and seal as if edgelm had written it."""
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
    seal(folder)


def rehash(folder: Path) -> None:
    """Record the folder's files as they are now (a damage the checksums would otherwise catch first)."""
    edit_manifest(folder, lambda d: d.update(files=hash_files(folder)))


@pytest.fixture
def copy_of(bundles, tmp_path):
    def copy(name: str = "llama") -> Path:
        folder = tmp_path / name.replace("/", "-")
        shutil.copytree(bundles(name)[0], folder)
        return folder
    return copy


# -- the graph -----------------------------------------------------------------------------------
def test_a_truncated_graph_fails_its_size_check(copy_of):
    folder = copy_of()
    graph = folder / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    assert_refused(folder, "is damaged", "model.onnx has", "copy or re-export")


def test_a_truncated_graph_with_matching_checksums_is_refused_by_onnxruntime_in_one_line(copy_of):
    folder = copy_of()
    graph = folder / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    rehash(folder)
    assert_refused(folder, "onnxruntime cannot load model.onnx", "re-export the bundle")


def test_a_corrupt_graph_byte_fails_its_sha256(copy_of):
    folder = copy_of()
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    assert_refused(folder, "model.onnx does not match its sha256")


def test_a_graph_that_is_not_onnx_at_all_is_refused(copy_of):
    folder = copy_of()
    (folder / "model.onnx").write_bytes(os.urandom(4096))
    rehash(folder)
    assert_refused(folder, "onnxruntime cannot load model.onnx")


# -- the manifest --------------------------------------------------------------------------------
def test_an_edited_manifest_field_breaks_its_seal(copy_of):
    folder = copy_of()
    path = folder / MANIFEST_NAME
    limit = json.loads(path.read_text())["max_context"]
    path.write_text(path.read_text().replace(f'"max_context": {limit}', f'"max_context": {limit - 1}'))
    assert json.loads(path.read_text())["max_context"] == limit - 1
    assert_refused(folder, "does not match manifest.sha256", "changed after edgelm wrote it")


def test_the_seal_is_sha256sums_own_format(copy_of):
    folder = copy_of()
    done = subprocess.run(["sha256sum", "-c", SEAL_NAME], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0 and "manifest.json: OK" in done.stdout
    (folder / SEAL_NAME).write_text("not a checksum\n")
    assert_refused(folder, "manifest.sha256 is not a sha256sum line")


def test_a_deliberate_edit_resealed_as_the_error_says_loads(copy_of):
    folder = copy_of()
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["generation"] = {"temperature": 0.5}
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="sha256sum manifest.json > manifest.sha256"):
        read_manifest(folder)
    subprocess.run(f"sha256sum {MANIFEST_NAME} > {SEAL_NAME}", shell=True, cwd=folder, check=True)
    assert read_manifest(folder).generation == {"temperature": 0.5}


@pytest.mark.parametrize("key", ["task", "graph", "max_context", "files", "tokenizer"])
def test_a_removed_key_is_named(copy_of, key):
    folder = copy_of()
    edit_manifest(folder, lambda d: d.pop(key))
    assert_refused(folder, f"field {key} is missing", "re-export the bundle")


@pytest.mark.parametrize("path, value, fragment", [
    (("max_context",), "64", "field max_context must be a whole number >= 1, got str"),
    (("max_context",), -5, "field max_context must be a whole number >= 1"),
    (("graph", "inputs"), {"name": "x"}, "field graph.inputs must be a list"),
    (("graph", "file"), 7, "field graph.file must be a file name, got int"),
    (("special_tokens", "eos"), 2, "field special_tokens.eos must be a list of token ids"),
    (("special_tokens", "eos"), [-1], "field special_tokens.eos must be a list of token ids"),
    (("kv_cache", "num_layers"), "2", "field kv_cache.num_layers must be a whole number >= 1"),
    (("files",), [], "field files must be an object"),
    (("format_version",), "2", "no integer format_version"),
    (("task",), "translation", "manifest task 'translation' is not one of"),
])
def test_a_wrong_type_is_named_with_its_field(copy_of, path, value, fragment):
    folder = copy_of()

    def change(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    edit_manifest(folder, change)
    assert_refused(folder, fragment)


def test_a_manifest_that_is_not_an_object_or_not_json(copy_of):
    folder = copy_of()
    (folder / MANIFEST_NAME).write_text("[1, 2]")
    seal(folder)
    assert_refused(folder, "holds a JSON list, not an object")
    (folder / MANIFEST_NAME).write_bytes(b"\xff\xfe{")
    seal(folder)
    assert_refused(folder, "is not readable JSON")


def test_an_unknown_format_version_asks_for_a_newer_edgelm(copy_of):
    folder = copy_of()
    edit_manifest(folder, lambda d: d.update(format_version=99))
    assert_refused(folder, "format_version 99 is newer than this edgelm reads", "upgrade edgelm")


def test_a_listed_file_removed_from_files_is_caught(copy_of):
    folder = copy_of()
    edit_manifest(folder, lambda d: d["files"].pop("tokenizer.json"))
    assert_refused(folder, "tokenizer.file 'tokenizer.json' is not listed in files")


# -- names that leave the bundle -----------------------------------------------------------------
@pytest.mark.parametrize("field, name", [
    ("graph.file", "../model.onnx"),
    ("graph.file", "/etc/passwd"),
    ("tokenizer.file", "sub/../../tokenizer.json"),
    ("tokenizer.chat_template", "..\\chat_template.jinja"),
])
def test_a_file_name_that_escapes_the_bundle_is_refused(copy_of, field, name):
    folder = copy_of()
    section, key = field.split(".")

    def change(d):
        d[section][key] = name
        d["files"][name] = d["files"].pop(next(iter(d["files"])))
    edit_manifest(folder, change)
    assert_refused(folder, "is unsafe to open", f"{field} is {name!r}")


def test_a_checksummed_file_name_with_dot_dot_is_refused(copy_of):
    folder = copy_of()
    edit_manifest(folder, lambda d: d["files"].update({"../outside.bin": {"sha256": "0" * 64, "bytes": 1}}))
    assert_refused(folder, "files['../outside.bin'] is '../outside.bin'")


def test_a_symlink_pointing_outside_the_bundle_is_refused(copy_of, tmp_path):
    folder = copy_of()
    outside = tmp_path / "elsewhere.json"
    shutil.move(folder / "tokenizer.json", outside)
    (folder / "tokenizer.json").symlink_to(outside)
    assert_refused(folder, "tokenizer.file 'tokenizer.json' is a link to", "outside the bundle")


def test_onnx_external_data_outside_the_bundle_is_refused(copy_of, tmp_path):
    """A graph whose weights live at '../weights.bin' (or an absolute path) is not loaded."""
    import onnx

    folder = copy_of()
    model = onnx.load(folder / "model.onnx")
    onnx.save_model(model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=4096)
    shutil.move(folder / "weights.bin", tmp_path / "weights.bin")
    for location in ("../weights.bin", str(tmp_path / "weights.bin")):
        graph = onnx.load(folder / "model.onnx", load_external_data=False)
        for tensor in graph.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save_model(graph, folder / "model.onnx")
        rehash(folder)
        assert_refused(folder, "model.onnx reads its weights from outside the bundle")


# -- tokenizer, chat template, task --------------------------------------------------------------
def test_a_tokenizer_json_that_is_not_a_tokenizer(copy_of):
    folder = copy_of()
    (folder / "tokenizer.json").write_text(json.dumps({"hello": "world"}))
    rehash(folder)
    assert_refused(folder, "tokenizer.json in", "is not a tokenizers file")


def test_a_chat_template_that_does_not_compile_is_refused_at_load(copy_of):
    folder = copy_of()
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }")
    rehash(folder)
    assert_refused(folder, "chat_template.jinja in", "is not a valid Jinja template", "line 1")


def test_a_chat_template_that_fails_while_rendering_is_one_generation_error(copy_of):
    folder = copy_of()
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}{{ 1 // 0 }}")
    rehash(folder)
    lm = load(folder, provider="cpu")
    with pytest.raises(GenerationError, match="chat template does not render .ZeroDivisionError"):
        lm.generate("hi", chat=True, max_new_tokens=2)
    done = run_cli("generate", folder, "hi", "--chat", "--max-new-tokens", "2")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        line for line in done.stderr.strip().splitlines() if line.startswith("error: the bundle's chat template does not render")]
    (folder / "chat_template.jinja").write_text("{{ raise_exception('only user turns') }}")
    rehash(folder)
    with pytest.raises(GenerationError, match="refused these messages: only user turns"):
        load(folder, provider="cpu").generate("hi", chat=True, max_new_tokens=2)


@pytest.mark.parametrize("name, command, fragment", [
    ("llama", ("embed", "hello"), "embed needs a feature-extraction bundle"),
    ("bert/feature-extraction", ("generate", "hello"), "text-generation bundle"),
    ("bert/feature-extraction", ("classify", "hello"), "classify needs a text-classification bundle"),
    ("bert/text-classification", ("fill-mask", "a [MASK]"), "fill_mask needs a fill-mask bundle"),
])
def test_a_bundle_whose_task_does_not_fit_the_command(bundles, name, command, fragment):
    done = run_cli(command[0], bundles(name)[0], *command[1:])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and fragment in lines[0], done.stderr
