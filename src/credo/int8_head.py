"""The output head in int8, for picking greedy candidates on a CPU where float32 is the precision.

A 262k-wide head costs more than the whole body at decode time on CPU. Where bf16 is slow (an AVX2 CPU), fbgemm's
dynamic int8 linear runs the head 3-8x faster than float32 (docs/precision.md); its logits err by ~1e-2, so the
caller (`Base.greedy_next`) rescores the top candidates exactly in float32: the same greedy token. Whether it runs is
`credo.runtime.precision`'s decision (`Precision.head`), taken from a micro-benchmark like the bf16 one.

The weights are quantized per output row (symmetric, 8 bits); the activations per call (7 bits, fbgemm's
`reduce_range`, which keeps AVX2's 16-bit pair sums from saturating).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether this torch has a CPU int8 linear to run (x86's fbgemm, or onednn)."""
    engines = set(torch.backends.quantized.supported_engines)
    return bool(engines & {"x86", "fbgemm"}) and hasattr(torch.ops.quantized, "linear_dynamic")


def pack(weight: torch.Tensor) -> Any:
    """The (out, in) float weight as fbgemm's packed int8 matrix, one scale per output row."""
    w = weight.detach().float().cpu()
    scale = (w.abs().amax(1) / 127).clamp_min(1e-12).double()
    with warnings.catch_warnings():  # torch marks quantized tensors deprecated in favour of torchao; we pin torch
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scale, torch.zeros(len(w), dtype=torch.long), 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None)


def logits(hidden: torch.Tensor, packed: Any) -> torch.Tensor:
    """Rough float32 logits (B, out) of `hidden` (B, in) through the packed head."""
    return torch.ops.quantized.linear_dynamic(hidden.float().contiguous(), packed, True)
