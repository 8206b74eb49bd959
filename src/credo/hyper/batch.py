"""Batched, teacher-forced passes over many short sequences, with or without the manifesto ahead of them.

Sequences are right-padded: with a causal mask no real token ever attends to a pad, so no attention mask is needed and
the teacher can share one prefilled manifesto cache expanded over the batch. Passes with no cache can also pack several
sequences into one row (`pack_batch`): position ids restart at each sequence, and transformers then masks each
sequence off from the others, so a row carries little padding (padded one per row, a third of the student's batch is padding).
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
    positions: torch.Tensor | None = None  # (B, T) when rows are packed; None: each row is one sequence from 0

    @property
    def rows(self) -> int:
        return int(self.fit.sum())


def make_batch(seqs: list[list[int]], starts: list[int], pad_id: int) -> Batch:
    """`starts[i]`: the first position of sequence i whose module activations enter the fit."""
    ids, fit, _, _ = _lay_out(seqs, starts, pad_id, [[i] for i in range(len(seqs))])
    return Batch(ids, fit, [len(s) for s in seqs])


def pack_batch(seqs: list[list[int]], starts: list[int], pad_id: int) -> tuple[Batch, list[int], list[tuple[int, int]]]:
    """Sequences packed first-fit, longest first, into rows as wide as the longest one.

    Returns the batch, the order the sequences lie in when the fit positions are read row by row (a fit's targets must
    follow it), and where each sequence starts (row, column), by its index in `seqs`."""
    width = max(len(s) for s in seqs)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        b = next((b for b, r in enumerate(room) if r >= len(seqs[i])), len(rows))
        if b == len(rows):
            rows.append([])
            room.append(width)
        rows[b].append(i)
        room[b] -= len(seqs[i])
    ids, fit, positions, where = _lay_out(seqs, starts, pad_id, rows)
    return Batch(ids, fit, [width] * len(rows), positions), [i for members in rows for i in members], where


def _lay_out(seqs: list[list[int]], starts: list[int], pad_id: int, rows: list[list[int]]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Ids, fit mask and position ids (B, T) with `rows[b]` the sequences row b holds, side by side from column 0, and
    where each sequence starts (row, column). One sequence per row is a plain right-padded batch."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    fit = torch.zeros((len(rows), width), dtype=torch.bool)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    where: list[tuple[int, int]] = [(0, 0)] * len(seqs)
    for b, members in enumerate(rows):
        col = 0
        for i in members:
            n = len(seqs[i])
            ids[b, col : col + n] = torch.tensor(seqs[i], dtype=torch.long)
            positions[b, col : col + n] = torch.arange(n)
            fit[b, col + starts[i] : col + n] = True
            where[i] = (b, col)
            col += n
        if col:  # the pads run on from the last sequence
            positions[b, col:] = torch.arange(width - col) + (positions[b, col - 1] + 1)
    return ids, fit, positions, where


@torch.inference_mode()
def prefill(base: Base, prefix: list[int]) -> Any:
    """The KV cache of `prefix` (the manifesto context), to be shared by every row of a batch."""
    from transformers import DynamicCache

    cache = DynamicCache(config=base.model.config)
    base.forward(torch.tensor([prefix], dtype=torch.long), cache, body_only=True)
    return cache


@torch.inference_mode()
def run_body(base: Base, ids: torch.Tensor, cache: Any = None, chunk: int = 16, lengths: list[int] | None = None,
             positions: torch.Tensor | None = None) -> None:
    """Run the decoder body (no LM head: hooks read what they need) over `ids`, after a prefilled `cache` when given.

    With `lengths`, each chunk is cut to its longest row: rows sorted by length then waste little on padding."""
    import copy

    for lo in range(0, ids.shape[0], chunk):
        part = ids[lo : lo + chunk]
        if lengths is not None:
            part = part[:, : chunk_width(lengths, lo, chunk)]
        past = None
        if cache is not None:
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(part.shape[0])
        pos = None if positions is None else positions[lo : lo + chunk, : part.shape[1]]
        base.forward(part, past, body_only=True, position_ids=pos)


def chunk_width(lengths: list[int], lo: int, chunk: int) -> int:
    return max(lengths[lo : lo + chunk])
