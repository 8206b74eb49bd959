"""`prompt`: the manifesto injected ahead of the user's words. The reference every other kind is measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from credo.layers.layer import Layer, LayerInfo
from credo.layers.registry import register

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto

PREAMBLE = "The assistant in the conversation below holds to this manifesto.\n\n"


def manifesto_context(manifesto: Manifesto, base: Base) -> str:
    """The text the teacher sees: the manifesto, then its example exchanges written as the base formats a chat."""
    text = PREAMBLE + manifesto.body.strip() + "\n\n"
    if manifesto.examples:
        turns = []
        for ex in manifesto.examples:
            turns += [{"role": "user", "content": ex.user}, {"role": "assistant", "content": ex.assistant}]
        text += base.format_chat(turns, add_generation_prompt=False).rstrip("\n") + "\n\n"
    return text


@register
class PromptLayer(Layer):
    kind = "prompt"

    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: None, info: LayerInfo) -> PromptLayer:
        info.params["context_tokens"] = len(base.encode(manifesto_context(manifesto, base), bos=True))
        return cls(info, manifesto)

    def context(self, base: Base) -> str:
        return manifesto_context(self.manifesto, base)
