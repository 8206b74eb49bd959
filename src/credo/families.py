"""The model families credo knows, and every way one differs from another, in one table.

Code that must treat a family apart (the module names an export targets, how llama.cpp lays a model out) reads a
`Family` field here instead of testing a family's name; a new family is one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family: its names in transformers and llama.cpp, and the differences credo's writers must honour."""

    name: str  # as credo names it (credo.base.TINY_FAMILIES)
    model_types: tuple[str, ...]  # Hugging Face config.model_type values of this family
    gguf_arch: str  # llama.cpp architecture name
    attention: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # under model.layers.N.self_attn
    mlp: tuple[str, ...] = ("gate_proj", "up_proj", "down_proj")  # under model.layers.N.mlp
    gemma: bool = False  # norms x·(1+w), GELU-tanh MLP, queries scaled by llama.cpp's rule, sliding layers by a period
    head_is_embedding: bool = False  # llama.cpp reads no output.weight for this architecture
    rope_adjacent_pairs: bool = False  # llama.cpp ropes (x0, x1), (x2, x3)...: transformers' halves need a permutation
    scale_in_q_norm: bool = False  # a query-scale difference can be folded into the per-head q norm (else it is refused)
    size_27b_layers: int = 0  # the layer count at which llama.cpp takes the 27B attention scale
    input_norm: str = "input_layernorm"  # the decoder layer's first norm: what enters it is the residual stream
    attention_out_norm: str = ""  # the decoder layer's norm on the attention output before the residual add ('' if none)

    @property
    def projections(self) -> tuple[str, ...]:
        return self.attention + self.mlp

    def module_path(self, layer: int, leaf: str) -> str:
        return f"model.layers.{layer}.{'self_attn' if leaf in self.attention else 'mlp'}.{leaf}"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gemma3", ("gemma3_text", "gemma3"), "gemma3", gemma=True, scale_in_q_norm=True, size_27b_layers=62,
               attention_out_norm="post_attention_layernorm"),
        Family("gemma2", ("gemma2",), "gemma2", gemma=True, head_is_embedding=True, size_27b_layers=46,
               attention_out_norm="post_attention_layernorm"),
        Family("gemma", ("gemma",), "gemma", gemma=True),
        Family("llama", ("llama",), "llama", rope_adjacent_pairs=True),
        Family("qwen2", ("qwen2",), "qwen2"),
        Family("qwen3", ("qwen3",), "qwen3"),
    )
}


def family_of(name: str) -> Family | None:
    """The family of a credo family name, a Hugging Face model_type or a llama.cpp architecture name; None if unknown."""
    for f in FAMILIES.values():
        if name == f.name or name in f.model_types or name == f.gguf_arch:
            return f
    return None


def adjacent_pairs(rows: Any, head_dim: int, back: bool = False) -> Any:
    """A q or k projection's rows (a tensor, any trailing shape) from transformers' rotate-half order to the adjacent
    pairs llama.cpp ropes in a `rope_adjacent_pairs` family, per head: row j < d/2 of a head goes to 2j, row d/2 + j
    to 2j + 1 (`back` undoes it)."""
    heads, rest = rows.shape[0] // head_dim, tuple(rows.shape[1:])
    shape = (heads, head_dim // 2, 2, *rest) if back else (heads, 2, head_dim // 2, *rest)
    return rows.reshape(shape).transpose(1, 2).reshape(rows.shape)
