"""The bare base's first-answer-token states, kept on disk per base: the quick look's denominator, which no manifesto
changes.

Each hyper compile reports KL(teacher ‖ base) at the first answer token of every probe. The base's side of that depends
only on the base and the prompt, and an edit-and-recompile loop asks for the same prompts again and again (only the
edited clause's probes are new), so each state is computed once and read back after. The file is a cache: a corrupt one
is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from credo.base import cache_dir
from credo.fsutil import save_tensors_atomic
from credo.hyper import closed_form
from credo.runtime.precision import compute

if TYPE_CHECKING:
    from pathlib import Path

    from credo.base import Base


def _path(base: Base) -> Path:
    return cache_dir() / "hyper" / f"base-first-{base.sha256[:16]}.safetensors"


def _key(conv: list[int], precision: str) -> str:
    return precision + "-" + hashlib.sha256(",".join(map(str, conv)).encode()).hexdigest()[:24]


def base_first_states(base: Base, convs: list[list[int]], bos: list[int], pad: int) -> torch.Tensor:
    """(len(convs), hidden): the bare base's final hidden state at each conversation's last token (after `bos`), in the
    chosen precision (`credo.runtime.precision`; the two precisions differ: each keeps its own states)."""
    path = _path(base)
    known: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            known = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            known = {}
    with compute(base) as precision:
        keys = [_key(c, precision.name) for c in convs]
        missing = list({k: i for i, k in enumerate(keys) if k not in known}.values())
        if missing:
            states = closed_form.last_states(base, [bos + convs[i] for i in missing], pad)
            known.update({keys[i]: s.float().contiguous() for i, s in zip(missing, states)})
            save_tensors_atomic(path, known)
    return torch.stack([known[k] for k in keys])


def forget(base: Base) -> None:
    """Drop the cached states (a cold start, for benchmarks)."""
    _path(base).unlink(missing_ok=True)
