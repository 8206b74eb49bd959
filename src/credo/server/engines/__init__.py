"""What the server needs from an engine, the torch implementation of it, and the choice between torch and llama.cpp.

An engine keeps one base loaded and a set of prepared identities keyed by name ('' is the bare base). The server calls
it from a single worker thread, so an engine never sees two requests at once and needs no locks of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from credo.runtime.torch_engine import TorchEngine
from credo.errors import CredoError

if TYPE_CHECKING:
    from credo.base import Base
    from credo.runtime.torch_engine import GenerationStats
    from credo.layers.layer import Layer

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
    name: str
    shares_torch_base: bool  # true when generation uses the torch model that compiling also uses

    def add(self, key: str, layer: Layer | None, folder: Path | None = None) -> None: ...

    def remove(self, key: str) -> None: ...

    def has(self, key: str) -> bool: ...

    def stream(
        self, key: str, prompt: RawText | Messages, sampling: Sampling, stats: GenerationStats, cancel: threading.Event
    ) -> Iterator[str]: ...


class TorchServeEngine:
    """Serves through `TorchEngine`: one light engine object per identity over the one loaded torch model."""

    name = "torch"
    shares_torch_base = True

    def __init__(self, base: Base, max_context: int = 4096):
        self.base = base
        self.max_context = max_context
        self.engines: dict[str, TorchEngine] = {}
        self.add("", None)

    def add(self, key: str, layer: Layer | None, folder: Path | None = None) -> None:
        self.engines[key] = _RawAwareTorchEngine(self.base, layer)

    def remove(self, key: str) -> None:
        self.engines.pop(key, None)

    def has(self, key: str) -> bool:
        return key in self.engines

    def stream(
        self, key: str, prompt: RawText | Messages, sampling: Sampling, stats: GenerationStats, cancel: threading.Event
    ) -> Iterator[str]:
        engine = self.engines[key]
        n_prompt = len(engine.context_ids()) + len(engine.conversation_ids(prompt))
        if n_prompt + sampling.max_tokens > self.max_context:
            raise PromptTooLong(
                f"prompt is {n_prompt} tokens; with max_tokens {sampling.max_tokens} it exceeds the context of {self.max_context}"
            )
        yield from engine.generate(
            prompt, max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
            stats=stats, stop=cancel.is_set,
        )


class _RawAwareTorchEngine(TorchEngine):
    """A TorchEngine that continues raw text as it is (for /v1/completions) and wraps messages as a chat."""

    def conversation_ids(self, prompt: RawText | Messages) -> list[int]:  # type: ignore[override]
        if isinstance(prompt, RawText):
            return self.base.encode(str(prompt))
        return super().conversation_ids(prompt)


def make_engine(choice: str, base: Base, n_ctx: int = 4096, threads: int | None = None) -> ServeEngine:
    """'auto' serves through torch on CUDA and through llama.cpp on CPU when the base has a GGUF; else torch."""
    if choice not in {"auto", "torch", "llamacpp"}:
        raise CredoError(f"unknown engine {choice!r}; choose auto, torch or llamacpp")
    if choice == "auto":
        import torch

        choice = "torch" if torch.cuda.is_available() or base.gguf is None else "llamacpp"
    if choice == "torch":
        return TorchServeEngine(base, max_context=n_ctx)
    if base.gguf is None:
        raise CredoError(f"base {base.name} has no GGUF file, so llama.cpp cannot serve it; use --engine torch")
    from credo.server.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(base, n_ctx=n_ctx, threads=threads)
