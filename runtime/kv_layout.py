"""The one naming function for decoder graphs: past/present names and their dynamic dims.

Export checks the graph it produced against these names; the runtime builds its feeds from
them. Nobody else spells `past_key_values.3.key`.

One graph serves prefill and decode: prefill feeds a past of length 0.

    input_ids        (batch_size, sequence_length)                          int64
    attention_mask   (batch_size, past_sequence_length + sequence_length)    int64
    position_ids     (batch_size, sequence_length)                          int64  [if the family uses them]
    past_key_values.{i}.key / .value
                     (batch_size, kv_heads, past_sequence_length, head_size)
    -> logits        (batch_size, sequence_length, vocab)
    -> present.{i}.key / .value
                     (batch_size, kv_heads, past_sequence_length + sequence_length, head_size)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

PAST_KEY = "past_key_values.{layer}.key"
PAST_VALUE = "past_key_values.{layer}.value"
PRESENT_KEY = "present.{layer}.key"
PRESENT_VALUE = "present.{layer}.value"
KV_AXES = ("batch_size", "kv_heads", "sequence", "head_size")

BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "past_sequence_length + sequence_length"


@dataclass(frozen=True)
class KVLayout:
    """Shape and names of a decoder's key/value cache, as the manifest records it."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    dtype: str = "float32"
    axes: tuple[str, ...] = KV_AXES
    past_key: str = PAST_KEY
    past_value: str = PAST_VALUE
    present_key: str = PRESENT_KEY
    present_value: str = PRESENT_VALUE

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

    def empty_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of a zero-length past, fed at prefill."""
        return (batch, self.num_kv_heads, 0, self.head_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["axes"] = list(self.axes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "KVLayout":
        d = dict(d)
        d["axes"] = tuple(d.get("axes", KV_AXES))
        return cls(**d)
