"""Issue 26 on the tiny models: the gate scores every domain of the evaluation suite (and the user's text as one
more), calibration reads other texts than the gate, int4-mixed keeps its most sensitive MatMuls at 8 bits, and the
numpy rounding the sensitivity and clipping rely on is onnxruntime's MatMulNBits rounding.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelm.errors import QuantizeError
from edgelm.quantize import Method, QuantizeOptions, quantize
from edgelm.quantize.clipping import clip_blocks
from edgelm.quantize.eval_suite import DOMAINS, calibration_texts, evaluation_texts
from edgelm.quantize.sensitivity import choose_eight_bit, kl_divergence, round_to_bits
from edgelm.runtime import load, verify
from tests.test_bad_input import assert_nothing_written, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def mixed(bundles, tmp_path_factory):
    """The tiny Llama quantized by int4-mixed, gate recorded only, scored on two domains and a user text."""
    src, _ = bundles("llama")
    root = tmp_path_factory.mktemp("mixed")
    user = root / "support-tickets.txt"
    user.write_text(" ".join(f"Ticket {i}: the printer on floor {i % 5} jams when printing duplicate pages." for i in range(40)))
    out = root / "int4-mixed"
    manifest = quantize(src, out, QuantizeOptions(Method.INT4_MIXED, gate=False, eval_domains=("prose", "code"),
                                                  eval_file=user), progress=False)
    return out, manifest


# -- the suite's texts ------------------------------------------------------------------------------
def test_every_domain_has_running_text_of_its_own():
    texts = evaluation_texts()
    assert tuple(texts) == DOMAINS
    for domain, text in texts.items():
        assert len(text) >= 3000, domain  # >= 1,000 tokens for the models the team measures (~3-4 characters each)
    assert len(set(texts.values())) == len(texts)


def test_calibration_never_sees_an_evaluation_text():
    """Calibration and gate texts share no sentence: the gate measures text calibration did not see."""
    def sentences(text):
        return {s.strip() for s in re.split(r"(?<=[.!?;:])\s+|\n", text) if len(s.strip()) >= 40}

    evaluated = set().union(*map(sentences, evaluation_texts().values()))
    for text in calibration_texts():
        assert not sentences(text) & evaluated


def test_unknown_domain_is_refused_before_any_work(bundles, tmp_path):
    src, _ = bundles("llama")
    with pytest.raises(QuantizeError, match="unknown evaluation domain 'poetry'; choose from prose, code"):
        quantize(src, tmp_path / "out", QuantizeOptions(Method.INT8, eval_domains=("poetry",)), progress=False)
    assert_nothing_written(tmp_path / "out")
    out = tmp_path / "cli-out"
    done = run_cli("quantize", str(src), str(out), "--method", "int8", "--eval-domains", "prose,poetry")
    assert_one_line_error(done, "unknown evaluation domain 'poetry'")
    assert_nothing_written(out)


# -- the gate over the suite ------------------------------------------------------------------------
def test_gate_reports_each_domain_the_users_text_and_the_worst(mixed):
    _, manifest = mixed
    acc = manifest.accuracy
    assert list(acc["domains"]) == ["prose", "code", "support-tickets"]
    increases = {d: r["perplexity_increase"] for d, r in acc["domains"].items()}
    for d, r in acc["domains"].items():
        assert r["perplexity_increase"] == pytest.approx(r["perplexity_quantized"] / r["perplexity_float"] - 1)
        assert r["kl_divergence"] >= 0 and r["eval_tokens"] >= 128
    assert acc["worst"]["domain"] == max(increases, key=increases.get)
    assert acc["worst"]["perplexity_increase"] == max(increases.values())
    assert acc["median"]["perplexity_increase"] == pytest.approx(float(np.median(list(increases.values()))))
    assert acc["eval_tokens"] == sum(r["eval_tokens"] for r in acc["domains"].values())  # pooled


def test_gate_fails_exactly_the_domains_over_the_limit_naming_each(mixed, bundles):
    """A limit between the best and the worst domain fails the domains above it and no other."""
    from edgelm.quantize.gate import THRESHOLDS, evaluate_decoder

    out, manifest = mixed
    src, _ = bundles("llama")
    increases = {d: r["perplexity_increase"] for d, r in manifest.accuracy["domains"].items()}
    limit = (min(increases.values()) + max(increases.values())) / 2
    float_lm, quant_lm = load(src, provider="cpu"), load(out, provider="cpu")
    encode = lambda text: float_lm.tokenizer.encode(text).ids  # noqa: E731
    texts = {**{d: encode(t) for d, t in evaluation_texts(("prose", "code")).items()},
             "support-tickets": encode((out.parent / "support-tickets.txt").read_text())}
    result = evaluate_decoder(float_lm, quant_lm, texts, replace(THRESHOLDS[Method.INT4_MIXED], max_ppl_increase=limit))
    assert {d: r["perplexity_increase"] for d, r in result["domains"].items()} == pytest.approx(increases)
    over = [d for d, x in increases.items() if x > limit]
    assert over and len(over) < len(increases)
    assert [f.split(" rose")[0].removeprefix("perplexity on ") for f in result["failures"]] == over
    assert not result["passed"]


# -- int4-mixed -------------------------------------------------------------------------------------
def test_int4_mixed_keeps_the_chosen_matmuls_at_8_bits_and_the_rest_at_4(mixed):
    out, manifest = mixed
    options = manifest.precision["options"]
    chosen = set(options["eight_bit_matmuls"])
    sensitivity = options["sensitivity_kl"]
    assert chosen and set(sensitivity) > chosen  # some, not all
    graph = onnx.load(str(out / manifest.graph_file), load_external_data=False).graph
    bits = {n.name.removesuffix("_Q8").removesuffix("_Q4"): next(a.i for a in n.attribute if a.name == "bits")
            for n in graph.node if n.op_type == "MatMulNBits"}
    for name in sensitivity:
        assert bits[name] == (8 if name in chosen else 4), name
    # the choice: most sensitive (KL / size^0.5) first, within the share
    assert options["eight_bit_share"] > 0 and options["size_exponent"] == 0.5
    assert verify(out, provider="cpu").passed


def test_choice_of_eight_bit_matmuls_spends_the_share_on_the_most_sensitive_by_the_given_ranking():
    sensitivity = {"a": 0.5, "b": 0.4, "c": 0.01, "d": 0.3}
    sizes = {"a": 100, "b": 10, "c": 10, "d": 40}
    # per element: b 0.04, d 0.0075, a 0.005, c 0.001; budget 0.32 * 160 = 51.2 elements
    assert choose_eight_bit(sensitivity, sizes, 0.32) == ["b", "d"]  # then a and c no longer fit
    assert choose_eight_bit(sensitivity, sizes, 0.3) == ["b", "c"]  # d does not fit (50 > 48): the next that does
    assert choose_eight_bit(sensitivity, sizes, 1.0) == ["b", "d", "a", "c"]
    assert choose_eight_bit(sensitivity, sizes, 0.0) == []
    # int4-mixed's ranking, KL / size^0.5: b 0.126, a 0.05, d 0.047, c 0.003 (a now before d; budget 120 elements)
    assert choose_eight_bit(sensitivity, sizes, 0.75, exponent=0.5) == ["b", "a", "c"]  # d no longer fits
    assert choose_eight_bit(sensitivity, sizes, 0.75, exponent=0) == ["a", "b", "c"]  # KL alone: a first


# -- the numpy rounding is onnxruntime's ------------------------------------------------------------
def _matmul_nbits_dequantized(weight: np.ndarray, bits: int, block: int) -> np.ndarray:
    """WEIGHT (K, N) through onnxruntime's MatMulNBitsQuantizer (RTN, zero points), read back by an identity input."""
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    k, n = weight.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [k, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [k, n])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=False, accuracy_level=0)
    quantizer.process()
    session = ort.InferenceSession(quantizer.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.eye(k, dtype=np.float32)})[0]


def test_round_to_bits_is_what_matmul_nbits_computes():
    weight = np.random.default_rng(0).standard_t(4, size=(96, 40)).astype(np.float32)  # 3 blocks of 32
    ours, theirs = round_to_bits(weight, 4, 32), _matmul_nbits_dequantized(weight, 4, 32)
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(weight).max()
    assert np.abs(ours - weight).max() > 1e-3  # it did round


def test_clipping_lowers_the_rounding_error_and_matmul_nbits_keeps_the_searched_range():
    weight = np.random.default_rng(1).standard_t(3, size=(128, 64)).astype(np.float32)
    clipped = clip_blocks(weight, 4, 32)
    plain = ((round_to_bits(weight, 4, 32) - weight) ** 2).mean()
    stored = _matmul_nbits_dequantized(clipped, 4, 32)
    assert np.abs(stored - round_to_bits(clipped, 4, 32)).max() <= 1e-5 * np.abs(weight).max()  # the range searched
    assert ((stored - weight) ** 2).mean() < 0.98 * plain  # measured 0.955 on this heavy-tailed matrix


def test_kl_divergence_is_zero_for_equal_logits_and_grows_with_the_difference():
    logits = np.random.default_rng(2).normal(size=(5, 50)).astype(np.float32)
    assert kl_divergence(logits, logits) == pytest.approx(0, abs=1e-12)
    assert 0 < kl_divergence(logits, logits * 1.1) < kl_divergence(logits, logits * 2)


def test_bundle_records_the_suite_in_its_manifest(mixed):
    out, _ = mixed
    recorded = json.loads((out / "manifest.json").read_text())["accuracy"]
    assert set(recorded["domains"]) == {"prose", "code", "support-tickets"} and "worst" in recorded and "median" in recorded


def test_a_user_text_named_like_a_domain_is_added_beside_it_not_instead(tmp_path):
    from edgelm.quantize.text_inputs import suite_ids

    user = tmp_path / "code.txt"
    user.write_text("SELECT name, total FROM orders WHERE total > 100 ORDER BY total DESC; " * 40)
    ids = suite_ids(user, ("prose", "code"), lambda text: text.split(), "evaluation")
    assert list(ids) == ["prose", "code", "code-file"]
    assert ids["code"] == evaluation_texts(("code",))["code"].split()  # the built-in text is still scored
