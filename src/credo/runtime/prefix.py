"""A saved KV state of a context (the manifesto's): what the `cache` kind stores and what the teacher's batches share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class PrefixState:
    """Per decoder layer: keys and values (1, kv_heads, kept, head_dim) and how many tokens that layer has seen."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    seen: list[int]

    @classmethod
    def from_cache(cls, ids: list[int], cache: Any) -> PrefixState:
        keys, values, seen = [], [], []
        for layer in cache.layers:
            keys.append(layer.keys.detach().clone())
            values.append(layer.values.detach().clone())
            seen.append(int(getattr(layer, "cumulative_length", layer.keys.shape[-2])))
        return cls(list(ids), keys, values, seen)

    def to_cache(self, config: Any, rows: int = 1, room: int = 0, dtype: torch.dtype | None = None) -> Any:
        """A fresh cache holding a copy of the state (over `rows` batch rows): generation appends to it, the saved state
        stays as it was. With `room`, each layer gets a buffer for that many more tokens, written in place, in `dtype`
        if given (under bf16 autocast attention casts the whole past to bf16 at every step: store it so once)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        if len(cache.layers) != len(self.keys):
            raise ValueError(f"saved state has {len(self.keys)} layers, the model {len(cache.layers)}")
        for layer, k, v, n in zip(cache.layers, self.keys, self.values, self.seen):
            layer.lazy_initialization(k, v)
            if room > 0:
                _give_room(layer, k, v, rows, room, dtype)
            else:
                layer.keys, layer.values = k.expand(rows, -1, -1, -1).clone(), v.expand(rows, -1, -1, -1).clone()
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = n
        return cache

    def empty(self) -> PrefixState:
        """A state of the same layout holding no tokens: a cache for rows that attend to this one elsewhere."""
        return PrefixState([], [k[..., :0, :] for k in self.keys], [v[..., :0, :] for v in self.values], [0] * len(self.seen))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"ids": torch.tensor(self.ids, dtype=torch.long), "seen": torch.tensor(self.seen, dtype=torch.long)}
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            tensors[f"k.{i}"], tensors[f"v.{i}"] = k.contiguous(), v.contiguous()
        return tensors

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> PrefixState:
        n = len(t["seen"])
        return cls(t["ids"].tolist(), [t[f"k.{i}"] for i in range(n)], [t[f"v.{i}"] for i in range(n)], t["seen"].tolist())

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in zip(self.keys, self.values))


def _give_room(layer: Any, k: torch.Tensor, v: torch.Tensor, rows: int, room: int, dtype: torch.dtype | None = None) -> None:
    """Back a cache layer by buffers with `room` free slots, so appending writes in place instead of concatenating.

    A dynamic cache copies every layer's whole past at every decoding step (`torch.cat`): with the manifesto's few
    hundred tokens repeated over 51 rows that is nearly half of a batched generation on CPU. While the
    buffer has room, and a sliding-window layer is still inside its window (where it keeps everything anyway), an
    append is a slice write; otherwise the layer's own update takes over, with the same result.
    """
    n = k.shape[-2]
    buf_k = k.new_empty(rows, k.shape[1], n + room, k.shape[-1], dtype=dtype or k.dtype)
    buf_v = v.new_empty(rows, v.shape[1], n + room, v.shape[-1], dtype=dtype or v.dtype)
    buf_k[:, :, :n], buf_v[:, :, :n] = k, v
    layer.keys, layer.values = buf_k[:, :, :n], buf_v[:, :, :n]
    own_update = layer.__dict__.setdefault("_own_update", layer.update)  # the layer's own, however often room is given
    window = getattr(layer, "sliding_window", None)

    def update(key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        have, new = layer.keys.shape[-2], key_states.shape[-2]
        inside = window is None or have + new <= window - 1
        if layer.keys._base is not buf_k or have + new > buf_k.shape[-2] or not inside:  # not data_ptr: 0 when empty
            return own_update(key_states, value_states, *args, **kwargs)
        buf_k[:, :, have : have + new], buf_v[:, :, have : have + new] = key_states, value_states
        layer.keys, layer.values = buf_k[:, :, : have + new], buf_v[:, :, : have + new]
        if window is not None:
            layer.cumulative_length += new
        return layer.keys, layer.values

    layer.update = update


def keep_rows(cache: Any, rows: torch.Tensor, room: int) -> Any:
    """Keep only batch `rows` of a generation cache, with `room` free slots per layer again: rows that finished
    early stop costing a decoding step each (on CPU, about half of a batch of chat answers ends well before the cap)."""
    for layer in cache.layers:
        k, v = layer.keys[rows], layer.values[rows]
        if room > 0:
            _give_room(layer, k, v, len(rows), room)
        else:
            layer.keys, layer.values = k, v
    return cache
