"""`prompt`: the manifesto injected ahead of the user's words. The reference every other kind is measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from credo.layers.layer import Layer, LayerInfo
from credo.layers.registry import register
from credo.manifesto import manifesto_context

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto

@register
class PromptLayer(Layer):
    kind = "prompt"
    order = 10

    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: None, info: LayerInfo) -> PromptLayer:
        info.params["context_tokens"] = len(base.encode(manifesto_context(manifesto, base), bos=True))
        return cls(info, manifesto)

    def context(self, base: Base) -> str:
        return manifesto_context(self.manifesto, base)
