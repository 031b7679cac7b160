"""The one naming function for decoder graphs: input, output and cache names, and their dims.

Export builds the graph with these names; the runtime binds its feeds by them. Nobody else
spells `past_key_values.3.key`.

One graph serves prefill and decode. Its cache is a buffer per layer that is bound as both the
past input and the present output (onnxruntime's GroupQueryAttention writes the new keys and
values into it in place), so a step costs the same at any context length:

    input_ids         (batch_size, sequence_length)                     int64
    position_ids      (batch_size, sequence_length)                     int64  [learned-position families only]
    sequence_lengths  (batch_size,)                                     int32  tokens each row holds after this call
    logits_to_keep    (1,)                                              int64  last positions to return logits for; 0 = all
    past_key_values.{i}.key / .value
                      (batch_size, kv_heads, capacity, head_size)             the shared buffer, bound again as...
    -> present.{i}.key / .value  (batch_size, kv_heads, capacity, head_size)  ...the same memory
    -> logits         (batch_size, logits_to_keep or sequence_length, vocab)

Row r's tokens sit at positions 0 .. length(r) - 1 of its buffer row (right padding); a call
appends `sequence_length` tokens to every row it runs, at positions length(r) - sequence_length
onward. Several tokens may be appended to one row at a time (a prompt); a batch appends one
token per row (a decode step). Rotary positions are derived from the lengths inside the graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PAST_KEY = "past_key_values.{layer}.key"
PAST_VALUE = "past_key_values.{layer}.value"
PRESENT_KEY = "present.{layer}.key"
PRESENT_VALUE = "present.{layer}.value"
KV_AXES = ("batch_size", "kv_heads", "capacity", "head_size")

# The oldest onnxruntime whose GroupQueryAttention runs each cache type: an int8 cache needs its
# k_scale/v_scale inputs (1.25) working (1.25 and 1.26 load such a graph but fail at the first run).
MIN_ONNXRUNTIME = {"float32": (1, 24), "int8": (1, 28)}

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
SEQUENCE_LENGTHS = "sequence_lengths"
LOGITS_TO_KEEP = "logits_to_keep"
LOGITS = "logits"

BATCH = "batch_size"
SEQUENCE = "sequence_length"
CAPACITY = "capacity"
KEPT = "kept_positions"

# The cache contract this edgelm writes and reads (manifest kv_cache.cache).
SHARED_BUFFER = "shared-buffer"
ATTENTION_OP = "com.microsoft.GroupQueryAttention"


@dataclass(frozen=True)
class KVLayout:
    """Shape, names and update model of a decoder's key/value cache, as the manifest records it."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    dtype: str = "float32"
    axes: tuple[str, ...] = KV_AXES
    past_key: str = PAST_KEY
    past_value: str = PAST_VALUE
    present_key: str = PRESENT_KEY
    present_value: str = PRESENT_VALUE
    cache: str = SHARED_BUFFER  # past and present are one buffer, updated in place
    attention: str = ATTENTION_OP  # the operator that reads and writes it
    # The checkpoint's head size when head_size is larger: heads padded with zero dimensions to a size
    # GroupQueryAttention takes (export/head_layout.py). Nothing changes for the runtime: head_size is the graph's.
    model_head_size: int | None = None
    # LongRoPE: keys cached while a row held at most this many tokens were rotated for short contexts. A row
    # that grows past it (or is cut back under it) has its whole sequence run again, in one call, as
    # transformers' generate does (runtime/kv_cache.py); the graph picks its tables by the call's lengths.
    rope_switch: int | None = None

    def __post_init__(self):
        for field in ("num_layers", "num_kv_heads", "head_size"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"KV layout {field} must be positive, got {getattr(self, field)}")

    def past_names(self) -> list[tuple[str, str]]:
        """(key, value) input names, layer by layer."""
        return [
            (self.past_key.format(layer=i), self.past_value.format(layer=i))
            for i in range(self.num_layers)
        ]

    def present_names(self) -> list[tuple[str, str]]:
        """(key, value) output names, layer by layer, in the same order as past_names."""
        return [
            (self.present_key.format(layer=i), self.present_value.format(layer=i))
            for i in range(self.num_layers)
        ]

    def buffer_shape(self, batch: int, capacity: int) -> tuple[int, int, int, int]:
        """Shape of one layer's key (or value) buffer."""
        return (batch, self.num_kv_heads, capacity, self.head_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["axes"] = list(self.axes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "KVLayout":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}  # a newer edgelm's extra keys are not ours to read
        d["axes"] = tuple(d.get("axes", KV_AXES))
        return cls(**d)


def onnxruntime_problem(layout: "KVLayout | None", version: str) -> str:
    """Why onnxruntime VERSION cannot run a cache of LAYOUT's type ('' when it can)."""
    if layout is None:
        return ""
    need = MIN_ONNXRUNTIME.get(layout.dtype)
    have = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if need is None or have >= need:
        return ""
    return (f"this bundle keeps its KV cache in {layout.dtype}, which needs onnxruntime {need[0]}.{need[1]} or later "
            f"(this is {version}); upgrade onnxruntime (pip install -U onnxruntime)")
