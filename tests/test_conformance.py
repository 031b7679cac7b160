"""Conformance vectors and `edgelm verify`: every exported bundle carries vectors that pass on the
machine that wrote them; a bundle broken on purpose (a changed weight, a swapped tokenizer, an
edited chat template) fails them with a report that names what is off; the agreement rules hold.

Bundles damaged here are re-hashed and resealed, so that they pass the file checks: what is
tested is that the vectors catch a bundle whose files are consistent but compute something else
(a bad build, an onnxruntime regression, a port that tokenizes differently).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgelm.errors import BundleError
from edgelm.runtime import conformance, load, verify
from edgelm.runtime.conformance import TOLERANCES, _greedy_agreement
from edgelm.runtime.manifest import read_manifest
from tests import tiny
from tests.test_bad_input import assert_one_line_error, run_cli

DECODERS = tiny.decoder_samples()
# one encoder per task, spread over three families (each task's vector kind is what differs)
ENCODERS = tiny.registered("bert/feature-extraction", "roberta/text-classification", "distilbert/token-classification",
                           "bert/fill-mask")
KINDS = {"feature-extraction": "embedding", "text-classification": "logits", "token-classification": "token_logits",
         "fill-mask": "fill_mask"}


def copy_of(bundles, name: str, tmp_path: Path) -> Path:
    src, _ = bundles(name)
    dst = tmp_path / name.replace("/", "-")
    shutil.copytree(src, dst)
    return dst


def reseal(folder: Path) -> None:
    """Re-hash every file and reseal the manifest: the bundle is consistent again, only different."""
    read_manifest(folder).with_files(folder).write(folder)


def scale_largest_weight(folder: Path, factor: float) -> str:
    """Multiply the largest float initializer of the graph by FACTOR; returns its name."""
    path = folder / read_manifest(folder).graph_file
    model = onnx.load(str(path))
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    target = max(floats, key=lambda i: int(np.prod(i.dims)))
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(factor), target.name))
    onnx.save(model, str(path))
    return target.name


# -- what export writes ----------------------------------------------------------------------
@pytest.mark.parametrize("name", [*DECODERS, *ENCODERS])
def test_every_exported_bundle_carries_checksummed_vectors_that_pass_here(bundles, name):
    folder, manifest = bundles(name)
    assert manifest.conformance_file == "conformance.json"
    assert "conformance.json" in manifest.files  # the checksum covers it like every other file
    data = json.loads((folder / "conformance.json").read_text(encoding="utf-8"))
    assert data["conformance_version"] == 1 and data["precision"] == "fp32"
    assert data["tolerances"] == {k: v for k, v in vars(TOLERANCES["fp32"]).items()}
    kinds = [v["kind"] for v in data["vectors"]]
    assert kinds[:4] == ["tokens"] * 4
    assert {v["name"] for v in data["vectors"][:4]} == {"plain text", "Chinese text", "emoji text", "white-space text"}
    report = verify(folder, provider="cpu")
    assert report.passed, [(o.name, o.detail) for o in report.failures]
    assert len(report.outcomes) == len(data["vectors"])


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_vectors_hold_two_prompts_alone_and_as_a_batch_of_different_lengths(bundles, name):
    folder, manifest = bundles(name)
    vectors = json.loads((folder / "conformance.json").read_text(encoding="utf-8"))["vectors"]
    greedy = [v for v in vectors if v["kind"] == "greedy"]
    assert [len(v["rows"]) for v in greedy] == [1, 1, 2]
    a, b = greedy[0]["rows"][0], greedy[1]["rows"][0]
    batch = greedy[2]["rows"]
    assert len(a["prompt_ids"]) != len(b["prompt_ids"])
    assert [batch[0]["prompt_ids"], batch[1]["prompt_ids"]] == [a["prompt_ids"], b["prompt_ids"]]
    assert [batch[0]["ids"], batch[1]["ids"]] == [a["ids"], b["ids"]]  # batched rows get what they get alone
    for row in (a, b):
        steps = len(row["ids"]) + (row["finish"] == "eos")
        assert row["finish"] in ("eos", "length") and len(row["margins"]) == steps <= 16
        assert len(row["top5"]) == 5 and row["top5"][0][1] >= row["top5"][-1][1]
        assert all(m >= 0 for m in row["margins"])
    lm = load(folder, provider="cpu")
    assert b["ids"] == lm.complete([conformance.PLAIN_PROMPT], max_new_tokens=16, temperature=0)[0].token_ids[:len(b["ids"])]
    chat = [v for v in vectors if v["kind"] == "chat"]
    assert (len(chat) == 1) == bool(manifest.chat_template_file)
    if chat:
        assert chat[0]["ids"] == lm.encode(conformance.CHAT) == a["prompt_ids"]


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_vectors_hold_the_tasks_output_for_a_padded_batch(bundles, name):
    folder, manifest = bundles(name)
    vectors = json.loads((folder / "conformance.json").read_text(encoding="utf-8"))["vectors"]
    (vector,) = [v for v in vectors if v["kind"] != "tokens"]
    assert vector["kind"] == KINDS[manifest.task]
    lengths = {len(row["ids"]) for row in vector["rows"]}
    assert len(lengths) > 1  # rows of different lengths: padding is part of what is checked
    enc = load(folder, provider="cpu")
    if vector["kind"] == "embedding":
        alone = enc.embed(vector["texts"][0])
        np.testing.assert_allclose(vector["rows"][0]["values"], alone, atol=1e-5)
    if vector["kind"] == "fill_mask":
        assert all(row["masks"] for row in vector["rows"])


# -- what verify catches ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ("llama", "bert/feature-extraction"))
def test_a_changed_weight_fails_verify_with_how_far_off(bundles, tmp_path, name):
    folder = copy_of(bundles, name, tmp_path)
    scale_largest_weight(folder, 1.5)
    reseal(folder)
    report = verify(folder, provider="cpu")
    assert not report.passed
    failed = {o.kind for o in report.failures}
    assert failed == ({"greedy"} if name == "llama" else {"embedding"})  # the tokenizer vectors still pass
    detail = " ".join(o.detail for o in report.failures)
    assert ("logits off by" in detail) if name == "llama" else ("max |diff|" in detail and "min cosine" in detail)


def test_a_changed_weight_without_resealing_is_refused_as_a_damaged_file(bundles, tmp_path):
    folder = copy_of(bundles, "gpt2", tmp_path)
    scale_largest_weight(folder, 1.5)
    with pytest.raises(BundleError, match="damaged: model.onnx"):
        verify(folder, provider="cpu")


def test_a_swapped_tokenizer_fails_the_tokenizer_vectors_by_name(bundles, tmp_path):
    folder = copy_of(bundles, "llama", tmp_path)
    other, _ = bundles("gpt2")
    shutil.copy2(other / "tokenizer.json", folder / "tokenizer.json")
    reseal(folder)
    report = verify(folder, provider="cpu")
    assert not report.passed
    tokens = [o for o in report.outcomes if o.kind == "tokens"]
    assert tokens and not any(o.passed for o in tokens)
    assert all("ids differ at" in o.detail for o in tokens)


def test_an_edited_chat_template_fails_the_chat_vector(bundles, tmp_path):
    folder = copy_of(bundles, "llama", tmp_path)
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text().replace("assistant", "bot"))
    reseal(folder)
    (chat,) = [o for o in verify(folder, provider="cpu").outcomes if o.kind == "chat"]
    assert not chat.passed and "rendered text differs at character" in chat.detail


def test_verify_cli_prints_a_row_per_vector_and_exits_1_on_a_failure(bundles, tmp_path):
    good, _ = bundles("gpt2")
    result = run_cli("verify", good, "--provider", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] and report["provider"] == "cpu" and report["precision"] == "fp32"
    assert all(v["passed"] for v in report["vectors"]) and len(report["vectors"]) == 7

    bad = copy_of(bundles, "gpt2", tmp_path)
    scale_largest_weight(bad, 1.5)
    reseal(bad)
    result = run_cli("verify", bad, "--provider", "cpu")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "vectors failed" in result.stdout
    assert "Traceback" not in result.stderr


def test_verify_of_a_bundle_without_vectors_says_to_re_export(bundles, tmp_path):
    folder = copy_of(bundles, "gpt2", tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    data.pop("conformance")
    data["files"].pop("conformance.json")
    (folder / "conformance.json").unlink()
    (folder / "manifest.json").write_text(json.dumps(data))
    from edgelm.runtime.manifest import seal

    seal(folder)
    load(folder, provider="cpu")  # such a bundle still runs...
    result = run_cli("verify", folder)  # ...but has nothing to verify against
    assert_one_line_error(result, "carries no conformance vectors")
    assert "re-export" in result.stderr


def test_the_conformance_file_cannot_name_a_file_outside_the_bundle(bundles, tmp_path):
    folder = copy_of(bundles, "gpt2", tmp_path)
    data = json.loads((folder / "manifest.json").read_text())
    data["conformance"] = "../elsewhere.json"
    (folder / "manifest.json").write_text(json.dumps(data))
    from edgelm.runtime.manifest import seal

    seal(folder)
    with pytest.raises(BundleError, match="conformance is '../elsewhere.json'"):
        verify(folder, provider="cpu")


def test_an_unknown_vector_kind_is_a_failure_not_a_pass(bundles):
    folder, _ = bundles("gpt2")
    vectors = conformance.read(folder, "conformance.json")
    vectors["vectors"].append({"kind": "speech", "name": "from the future"})
    outcomes = conformance.check(load(folder, provider="cpu"), vectors)
    assert outcomes[-1].passed is False and "unknown kind 'speech'" in outcomes[-1].detail
    assert all(o.passed for o in outcomes[:-1])


def test_a_newer_conformance_version_is_refused_with_what_to_do(bundles, tmp_path):
    folder = copy_of(bundles, "gpt2", tmp_path)
    path = folder / "conformance.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["conformance_version"] = 2
    path.write_text(json.dumps(data))
    reseal(folder)
    with pytest.raises(BundleError, match="conformance_version 2.*upgrade edgelm"):
        verify(folder, provider="cpu")


# -- the agreement rules ---------------------------------------------------------------------
def test_greedy_rows_that_part_at_a_near_tie_agree_and_elsewhere_fail():
    want, margins = [5, 6, 7, 8], [1.0, 0.001, 1.0, 1.0]
    assert _greedy_agreement(want, [5, 6, 7, 8], margins, 0.01) == ""
    assert "near-tie at step 1" in _greedy_agreement(want, [5, 9, 1, 1], margins, 0.01)  # the rest is not compared
    assert _greedy_agreement(want, [5, 6, 9, 8], margins, 0.01).startswith("differ at step 2")
    assert _greedy_agreement(want, [5, 6, 7], margins, 0.01).startswith("differ in length")
    assert _greedy_agreement([5, -1], [5, 6], [1.0, 1.0], 0.01) == "differ at step 1: 6 instead of eos (recorded margin 1)"


def test_tolerances_loosen_with_precision_and_an_int8_cache_counts_as_int8(bundles):
    assert TOLERANCES["fp32"].logit_abs < TOLERANCES["int8"].logit_abs <= TOLERANCES["int4"].logit_abs
    assert TOLERANCES["fp32"].cosine_min > TOLERANCES["int8"].cosine_min
    _, manifest = bundles("llama")
    from dataclasses import replace

    assert conformance.precision_of(manifest) == "fp32"
    assert conformance.precision_of(replace(manifest, kv_cache=replace(manifest.kv_cache, dtype="int8"))) == "int8"
    assert conformance.precision_of(replace(manifest, precision={"weights": "int4"})) == "int4"
