"""Batched, teacher-forced passes over many short sequences, with or without the manifesto ahead of them.

Sequences are right-padded: with a causal mask no real token ever attends to a pad, so no attention mask is needed and
the teacher can share one prefilled manifesto cache expanded over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from credo.base import Base


@dataclass
class Batch:
    """Token ids (B, T), right-padded, and which positions the fit reads (B, T)."""

    ids: torch.Tensor
    fit: torch.Tensor
    lengths: list[int]

    @property
    def rows(self) -> int:
        return int(self.fit.sum())


def make_batch(seqs: list[list[int]], starts: list[int], pad_id: int) -> Batch:
    """`starts[i]`: the first position of sequence i whose module activations enter the fit."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    fit = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        fit[i, start : len(s)] = True
    return Batch(ids, fit, [len(s) for s in seqs])


@torch.inference_mode()
def prefill(base: Base, prefix: list[int]) -> Any:
    """The KV cache of `prefix` (the manifesto context), to be shared by every row of a batch."""
    from transformers import DynamicCache

    cache = DynamicCache(config=base.model.config)
    base.model.model(input_ids=torch.tensor([prefix], dtype=torch.long), past_key_values=cache, use_cache=True)
    return cache


@torch.inference_mode()
def run_body(base: Base, ids: torch.Tensor, cache: Any = None, chunk: int = 16, lengths: list[int] | None = None) -> None:
    """Run the decoder body (no LM head: hooks read what they need) over `ids`, after a prefilled `cache` when given.

    With `lengths`, each chunk is cut to its longest row: rows sorted by length then waste little on padding."""
    import copy

    body = base.model.model
    for lo in range(0, ids.shape[0], chunk):
        part = ids[lo : lo + chunk]
        if lengths is not None:
            part = part[:, : chunk_width(lengths, lo, chunk)]
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(part.shape[0])
        body(input_ids=part, past_key_values=past, use_cache=past is not None)


def chunk_width(lengths: list[int], lo: int, chunk: int) -> int:
    return max(lengths[lo : lo + chunk])
