"""Attention over one shared prefix (the manifesto) plus each row's own tokens, without a copy of the prefix per row.

A batched teacher generation puts the same manifesto ahead of every row. Stored as an ordinary cache, its keys and
values are repeated over the batch, and at every decoding step attention reads all those copies: a sixth of a hyper
compile on CPU, bound by memory, not arithmetic. Here the cache holds only the rows' own tokens; the prefix's keys are
kept once, and each layer's attention scores every row's queries against them in one matrix product (a GEMM instead
of 51 GEMVs), then joins the two parts in a single softmax. The result is the same attention, up to rounding.

Used as a transformers attention implementation while `active` is entered, which sets it on the model's config: not
for a model that other threads run meanwhile (the server runs every model call on its one worker). It needs every query
within the sliding window of every prefix key (`fits`); a caller whose rows would outgrow it keeps the per-row cache.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

if TYPE_CHECKING:
    from credo.runtime.prefix import PrefixState

NAME = "credo_shared_prefix"
_prefix: contextvars.ContextVar[PrefixState | None] = contextvars.ContextVar("credo_shared_prefix", default=None)


def fits(config: Any, positions: int) -> bool:
    """Whether `positions` tokens (prefix included) all stay inside every sliding layer's window."""
    window = getattr(config, "sliding_window", None)
    return window is None or positions <= window


@contextlib.contextmanager
def active(model: torch.nn.Module, prefix: PrefixState) -> Iterator[None]:
    """The model attends to `prefix` ahead of whatever its cache holds, until the block ends."""
    config = model.config
    saved = config._attn_implementation
    token = _prefix.set(prefix)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = saved
        _prefix.reset(token)


def _attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
               **kwargs: Any) -> tuple[torch.Tensor, None]:
    """(B, Hq, T, D) queries over the prefix's (1, Hkv, L, D) and the rows' (B, Hkv, S, D) keys -> (B, T, Hq, D)."""
    prefix = _prefix.get()
    if prefix is None:
        raise RuntimeError("shared-prefix attention ran outside `shared_prefix.active`")
    rows, heads, t, dim = query.shape
    kv_heads, own = key.shape[1], key.shape[2]
    group = heads // kv_heads * t  # the queries that share one kv head, per row
    # float32 throughout, as SDPA's CPU kernel accumulates (bf16 scores err by ~0.1 at their size)
    q = query.float().reshape(rows, kv_heads, group, dim)
    kp, vp = prefix.keys[module.layer_idx][0].float(), prefix.values[module.layer_idx][0].float()  # (Hkv, L, D)
    scale = scaling if scaling is not None else dim**-0.5
    # the prefix part as one product per kv head, every row's queries stacked (a view when there is one kv head)
    stacked = q.transpose(0, 1).reshape(kv_heads, rows * group, dim)
    on_prefix = (stacked @ kp.transpose(1, 2)).reshape(kv_heads, rows, group, -1).transpose(0, 1) * scale
    on_own = (q @ key.float().transpose(2, 3)) * scale  # (B, Hkv, group, S)
    allowed = _allowed(attention_mask, t, own, query.device)  # (B or 1, 1, T, S)
    on_own = on_own.view(rows, kv_heads, heads // kv_heads, t, own).masked_fill(~allowed[:, :, None], float("-inf"))
    weights = torch.softmax(torch.cat([on_prefix, on_own.view(rows, kv_heads, group, own)], -1), -1)
    split = kp.shape[1]
    w_prefix = weights[..., :split].transpose(0, 1).reshape(kv_heads, rows * group, split)
    out = (w_prefix @ vp).reshape(kv_heads, rows, group, dim).transpose(0, 1) + weights[..., split:] @ value.float()
    return out.to(query.dtype).reshape(rows, heads, t, dim).transpose(1, 2).contiguous(), None


def _allowed(mask: torch.Tensor | None, t: int, s: int, device: torch.device) -> torch.Tensor:
    """The rows' own keys each query may see: the mask transformers built (bool, or additive float), or plain causal
    when it left the mask out (no padding)."""
    if mask is None:
        return (torch.arange(s, device=device)[None, :] <= torch.arange(s - t, s, device=device)[:, None])[None, None]
    return mask if mask.dtype == torch.bool else mask == 0


AttentionInterface.register(NAME, _attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
