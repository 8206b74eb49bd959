"""`cache`: the manifesto's warmed-up KV state, computed once at compile time and restored for every request.

It answers exactly as `prompt` does (the engine always runs the context as its own forward pass, so the saved state
is bitwise what a fresh prefill makes), while skipping the manifesto's prefill.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file

from credo.layers.layer import Layer, LayerInfo
from credo.layers.registry import register
from credo.manifesto import manifesto_context
from credo.runtime.prefix import PrefixState
from credo.runtime.torch_engine import TorchEngine

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto

STATE_FILE = "kv_state.safetensors"


@register
class CacheLayer(Layer):
    kind = "cache"
    order = 20

    def __init__(self, info: LayerInfo, manifesto: Manifesto, state: PrefixState | None = None):
        super().__init__(info, manifesto)
        self.state = state

    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: None, info: LayerInfo) -> CacheLayer:
        ids = base.encode(manifesto_context(manifesto, base), bos=True)
        _, cache = TorchEngine(base).forward(ids)
        state = PrefixState.from_cache(ids, cache)
        info.params.update(context_tokens=len(ids), state_bytes=state.nbytes)
        return cls(info, manifesto, state)

    def save_payload(self, folder: Path) -> None:
        save_file(self.state.to_tensors(), str(folder / STATE_FILE), metadata={"format": "credo-kv-v1"})

    @classmethod
    def load_payload(cls, folder: Path, info: LayerInfo, manifesto: Manifesto) -> CacheLayer:
        return cls(info, manifesto, PrefixState.from_tensors(load_file(str(folder / STATE_FILE))))

    def context(self, base: Base) -> str:
        return manifesto_context(self.manifesto, base)

    def prefix_state(self, base: Base) -> PrefixState:
        return self.state
