"""Tiny random checkpoints of every supported family and task, built from transformers configs.

Each is saved as a normal checkpoint folder (config.json, model.safetensors, tokenizer) so the
export sees exactly what a user's folder looks like. Tokenizers are trained here on a small
corpus (no hub): byte-level BPE for GPT-2/Llama/RoBERTa, WordPiece for BERT/DistilBERT.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital and largest city of France.",
    "edgelm ships language models to small machines without torch.",
    "Once upon a time there was a tiny model that ran on an edge box.",
    "What is the capital of France? The capital of France is Paris.",
    "Rain falls softly on the roof; the kiosk hums along.",
] * 20
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bpe_tokenizer(special: list[str], vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def wordpiece_tokenizer() -> Tokenizer:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    tok = bpe_tokenizer(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def llama_tokenizer() -> PreTrainedTokenizerFast:
    tok = bpe_tokenizer(["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def bert_tokenizer(with_token_types: bool = True) -> PreTrainedTokenizerFast:
    names = ["input_ids", "token_type_ids", "attention_mask"] if with_token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=wordpiece_tokenizer(), unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_input_names=names)


def distilbert_tokenizer() -> PreTrainedTokenizerFast:
    return bert_tokenizer(with_token_types=False)


def roberta_tokenizer() -> PreTrainedTokenizerFast:
    tok = bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
                                                      add_prefix_space=False, trim_offsets=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")


def gemma_tokenizer() -> PreTrainedTokenizerFast:
    """Gemma's layout: <pad> 0, <eos> 1, <bos> 2; EmbeddingGemma's tokenizer adds <bos> ... <eos>."""
    tok = bpe_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>",
        special_tokens=[("<bos>", tok.token_to_id("<bos>")), ("<eos>", tok.token_to_id("<eos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
                                   pad_token="<pad>", mask_token="<mask>")


LABELS = {"id2label": {0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1, "NEUTRAL": 2}}

_DECODER_SIZES = dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                      intermediate_size=96, max_position_embeddings=128)
# name -> (config class, config kwargs, tokenizer factory); one entry at least per decoder model_type in the registry
DECODERS = {
    "gpt2": ("GPT2Config", dict(n_layer=2, n_head=4, n_embd=64, n_positions=128), gpt2_tokenizer),
    "distilgpt2": ("GPT2Config", dict(n_layer=1, n_head=2, n_embd=32, n_positions=64), gpt2_tokenizer),
    "llama": ("LlamaConfig", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                                  intermediate_size=96, max_position_embeddings=128, tie_word_embeddings=True), llama_tokenizer),
    "mistral": ("MistralConfig", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, hidden_size=64,
                                      intermediate_size=96, max_position_embeddings=128, sliding_window=None), llama_tokenizer),
    "mistral-window": ("MistralConfig", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                             hidden_size=64, intermediate_size=96, max_position_embeddings=128,
                                             sliding_window=5), llama_tokenizer),
    "qwen2": ("Qwen2Config", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=64,
                                  intermediate_size=96, max_position_embeddings=128), llama_tokenizer),
    # A window (6) shorter than every test's prompt plus generation, on the layers from max_window_layers (1) on
    "qwen2-window-layers": ("Qwen2Config", dict(**_DECODER_SIZES, use_sliding_window=True, sliding_window=6,
                                                max_window_layers=1), llama_tokenizer),
    # head_dim set apart from hidden / heads, as Qwen3-0.6B's 128 with hidden 1024 and 16 heads
    "qwen3": ("Qwen3Config", dict(**_DECODER_SIZES, head_dim=32, use_sliding_window=True, sliding_window=6,
                                  max_window_layers=1, tie_word_embeddings=True), llama_tokenizer),
    "gemma": ("GemmaConfig", dict(**_DECODER_SIZES, head_dim=16), llama_tokenizer),
    # alternating sliding (window 6) and global layers, both soft-caps, query_pre_attn_scalar apart from head_dim
    "gemma2": ("Gemma2Config", dict(_DECODER_SIZES, num_hidden_layers=3, head_dim=16, sliding_window=6,
                                    query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
               llama_tokenizer),
    # Gemma 3 270M's pattern in small: local layers (window 6, base 10k), a global one (base 1M, linear scaling 8)
    "gemma3_text": ("Gemma3TextConfig", dict(_DECODER_SIZES, num_hidden_layers=3, head_dim=16, sliding_window=6,
                                             layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                             rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                              "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                                 "rope_theta": 1000000.0}}),
                    llama_tokenizer),
    # Phi-4-mini's shape in small: rotary on half of each head, LongRoPE switching at 16 tokens
    "phi3": ("Phi3Config", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=128,
                                intermediate_size=96, max_position_embeddings=128, original_max_position_embeddings=16,
                                pad_token_id=0, rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                  "partial_rotary_factor": 0.5, "original_max_position_embeddings": 16,
                                                  "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0],
                                                  "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0]}),
             llama_tokenizer),
    # Pythia's shape: parallel residual, rotary on a quarter of each head (4 of 16: padded for GroupQueryAttention)
    "gpt_neox": ("GPTNeoXConfig", dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=96,
                                       max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=True),
                 llama_tokenizer),
    "gpt_neox-sequential": ("GPTNeoXConfig", dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=64,
                                                  intermediate_size=96, max_position_embeddings=128,
                                                  use_parallel_residual=False), llama_tokenizer),
    "granite": ("GraniteConfig", dict(**_DECODER_SIZES, embedding_multiplier=6.0, residual_multiplier=0.3,
                                      attention_multiplier=0.05, logits_scaling=4.0), llama_tokenizer),
    "olmo2": ("Olmo2Config", dict(**_DECODER_SIZES), llama_tokenizer),
    # every second layer without rotary positions (SmolLM3-3B has one in four)
    "smollm3": ("SmolLM3Config", dict(**_DECODER_SIZES, no_rope_layer_interval=2, pad_token_id=0), llama_tokenizer),
    # small research models: head size 12 (GPT-2 with hidden 48 and 4 heads), head size 4 (Llama)
    "gpt2-head12": ("GPT2Config", dict(n_layer=2, n_head=4, n_embd=48, n_positions=128), gpt2_tokenizer),
    "llama-head4": ("LlamaConfig", dict(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=16,
                                        intermediate_size=32, max_position_embeddings=128), llama_tokenizer),
}
_ENCODER_SIZES = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64)
# One entry per encoder model_type in the family registry (tests/test_export_encoders.py checks it).
ENCODERS = {
    "bert": ("BertConfig", dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                                max_position_embeddings=64), bert_tokenizer),
    "distilbert": ("DistilBertConfig", dict(n_layers=2, n_heads=2, dim=32, hidden_dim=64, max_position_embeddings=64),
                   distilbert_tokenizer),
    "roberta": ("RobertaConfig", dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                                      max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2),
                roberta_tokenizer),
    "xlm-roberta": ("XLMRobertaConfig", dict(**_ENCODER_SIZES, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                                             eos_token_id=2), roberta_tokenizer),
    "camembert": ("CamembertConfig", dict(**_ENCODER_SIZES, max_position_embeddings=66, pad_token_id=1, bos_token_id=0,
                                          eos_token_id=2), roberta_tokenizer),
    "mpnet": ("MPNetConfig", dict(**_ENCODER_SIZES, max_position_embeddings=66, pad_token_id=0), distilbert_tokenizer),
    "electra": ("ElectraConfig", dict(**_ENCODER_SIZES, embedding_size=16, max_position_embeddings=64), bert_tokenizer),
    # three layers: global, local (window 8, shorter than the test texts), global
    "modernbert": ("ModernBertConfig", dict(num_hidden_layers=3, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                                            max_position_embeddings=64, global_attn_every_n_layers=2, local_attention=8,
                                            pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
                                            eos_token_id=3), distilbert_tokenizer),
    "deberta-v2": ("DebertaV2Config", dict(**_ENCODER_SIZES, max_position_embeddings=64, relative_attention=True,
                                           position_buckets=16, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                           norm_rel_ebd="layer_norm", share_att_key=True, type_vocab_size=0,
                                           pad_token_id=0), distilbert_tokenizer),
    # EmbeddingGemma's shape: bidirectional attention, sliding windows (4, shorter than the texts) and global layers
    "gemma3_text": ("Gemma3TextConfig", dict(num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                             hidden_size=32, intermediate_size=64, max_position_embeddings=64,
                                             sliding_window=4, use_bidirectional_attention=True,
                                             layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                             pad_token_id=0, eos_token_id=1, bos_token_id=2), gemma_tokenizer),
}
ENCODER_HEADS = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "fill-mask": "AutoModelForMaskedLM",
}


def save_decoder(name: str, folder: Path) -> Path:
    config_cls, kwargs, make_tokenizer = DECODERS[name]
    tokenizer = make_tokenizer()
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = getattr(transformers, config_cls)(vocab_size=len(tokenizer), initializer_range=0.2, **ids, **kwargs)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    return _save(model, tokenizer, folder)


def save_encoder(name: str, task: str, folder: Path) -> Path:
    config_cls, kwargs, make_tokenizer = ENCODERS[name]
    tokenizer = make_tokenizer()
    extra = LABELS if task in ("text-classification", "token-classification") else {}
    config = getattr(transformers, config_cls)(vocab_size=len(tokenizer), **extra, **kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, ENCODER_HEADS[task]).from_config(config)
    return _save(model, tokenizer, folder)


def _save(model, tokenizer, folder: Path) -> Path:
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def decoder_model_types() -> list[str]:
    """Every decoder model_type the family registry declares."""
    from edgelm.export.families import Kind, families_of_kind

    return [mt for family in families_of_kind(Kind.DECODER) for mt in family.model_types]


def decoder_cases() -> list[str]:
    """Every tiny decoder checkpoint: at least one per decoder model_type, plus the variants of a family's wiring."""
    return list(DECODERS)


def model_type_of(name: str) -> str:
    """The model_type of tiny decoder NAME's config class."""
    return getattr(transformers, DECODERS[name][0]).model_type


def encoder_model_types() -> list[str]:
    """Every encoder model_type the family registry declares (each has a tiny checkpoint above)."""
    from edgelm.export.families import Kind, families_of_kind

    return [mt for family in families_of_kind(Kind.ENCODER) for mt in family.model_types]


def encoder_cases(task: str | None = None) -> list[str]:
    """'model_type/task' for every encoder model_type and every task its family serves (or only TASK)."""
    from edgelm.export.families import family_for

    cases = []
    for model_type in encoder_model_types():
        family = family_for(model_type, ENCODERS[model_type][1])
        cases += [f"{model_type}/{t}" for t in family.tasks if task in (None, t)]
    return cases


def decoder_samples() -> list[str]:
    """One tiny decoder per way the registered decoder families take positions: a learned table (the graph reads
    position_ids) or rotary (computed from the sequence lengths), each the first registered family of its kind.

    For tests of what every decoder bundle shares (the runtime, the server, quantize's passes): the runtime reads
    only the manifest, and the position input is the one thing in it that changes what the runtime feeds the
    graph, so every family (decoder_cases()) would run the same code again. A family of a new kind adds a sample.
    """
    from edgelm.export.families import Kind, families_of_kind

    first = {}
    for family in families_of_kind(Kind.DECODER):
        first.setdefault(family.decoder.rotary is None, family)
    return [next(n for n in DECODERS if family_of(n) == family) for family in first.values()]


def registered(*names: str) -> list[str]:
    """NAMES, tiny checkpoints a test picked on purpose (for a property of theirs it relies on), once each is
    known to be served by a registered family and task: a family dropped from the registry fails here, by name."""
    from edgelm.errors import ExportError

    for name in names:
        try:
            family = family_of(name)
        except KeyError:
            raise LookupError(f"no tiny checkpoint is named {name!r}") from None
        except ExportError as e:  # a model_type no registered family declares
            raise LookupError(f"tiny checkpoint {name!r} has no registered family: {e}") from None
        task = name.partition("/")[2] or "text-generation"
        if task not in family.tasks:
            raise LookupError(f"tiny checkpoint {name!r}: family {family.name} serves {', '.join(family.tasks)}")
    return list(names)


def family_of(name: str):
    """The registered family that exports tiny checkpoint NAME ('model_type/task' for an encoder)."""
    from edgelm.export.families import family_for

    if "/" in name:
        model_type = name.split("/")[0]
        return family_for(model_type, ENCODERS[model_type][1])
    return family_for(model_type_of(name), DECODERS[name][1])


def save_reranker(folder: Path) -> Path:
    """A cross-encoder as sentence-transformers' CrossEncoder loads one: BERT with a one-label head, its tokenizer
    limited to the model's positions (real ones declare 512), weights wide enough that scores spread out."""
    _, kwargs, make_tokenizer = ENCODERS["bert"]
    tokenizer = make_tokenizer()
    tokenizer.model_max_length = kwargs["max_position_embeddings"]
    config = transformers.BertConfig(vocab_size=len(tokenizer), num_labels=1, initializer_range=0.2, **kwargs)
    torch.manual_seed(0)
    return _save(transformers.BertForSequenceClassification(config), tokenizer, folder)
