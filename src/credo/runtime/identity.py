"""What the runtime needs of an identity: the three ways a layer acts on a run. `credo.layers.Layer` has them all;
the runtime names only this protocol, so it never imports the layers built on top of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from credo.manifesto import manifesto_context

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto
    from credo.runtime.prefix import PrefixState


class Identity(Protocol):
    kind: str

    def context(self, base: Base) -> str:
        """Text placed ahead of the conversation on every request."""

    def prefix_state(self, base: Base) -> PrefixState | None:
        """A saved KV state standing in for the context's prefill, if kept."""

    def applied(self, model: Any) -> contextlib.AbstractContextManager:
        """Changes to the forward pass while the block runs."""


@dataclass
class Teacher:
    """The reference every figure is measured against: the base with the manifesto in its context (what the `prompt`
    kind compiles to, without compiling anything)."""

    text: str
    kind: str = "prompt"

    @classmethod
    def of(cls, manifesto: Manifesto, base: Base) -> Teacher:
        return cls(manifesto_context(manifesto, base))

    def context(self, base: Base) -> str:
        return self.text

    def prefix_state(self, base: Base) -> None:
        return None

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        yield
