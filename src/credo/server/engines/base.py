"""What the server needs from an engine: the request types and the protocol every serving engine implements.

An engine keeps one base loaded and a set of prepared identities keyed by name ('' is the bare base). The server calls
it from a single worker thread, so an engine never sees two requests at once and needs no locks of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from credo.errors import CredoError

if TYPE_CHECKING:
    from credo.layers.layer import Layer
    from credo.runtime.torch_engine import GenerationStats

Messages = list[dict[str, str]]


class RawText(str):
    """A completion prompt: text continued as it is, not wrapped into a chat transcript."""


@dataclass
class Sampling:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


class PromptTooLong(CredoError):
    """The prompt and the requested tokens do not fit the engine's context window."""


class ServeEngine(Protocol):
    """A serving engine registers its class in `credo.server.engines.ENGINES`: `name`, `order` (which `auto` tries
    first), `suits(base)` (whether `auto` may pick it) and `create(base, n_ctx, threads)`."""

    name: str
    shares_torch_base: bool  # true when generation uses the torch model that compiling also uses

    def add(self, key: str, layer: Layer | None, folder: Path | None = None) -> None: ...

    def remove(self, key: str) -> None: ...

    def has(self, key: str) -> bool: ...

    def stream(
        self, key: str, prompt: RawText | Messages, sampling: Sampling, stats: GenerationStats, cancel: threading.Event
    ) -> Iterator[str]: ...
