"""Serving through credo's own torch engine: any base, any layer, on CPU or CUDA."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from credo.runtime.torch_engine import TorchEngine
from credo.server.engines import register
from credo.server.engines.base import Messages, PromptTooLong, RawText, Sampling

if TYPE_CHECKING:
    from credo.base import Base
    from credo.layers.layer import Layer
    from credo.runtime.torch_engine import GenerationStats


@register
class TorchServeEngine:
    """Serves through `TorchEngine`: one light engine object per identity over the one loaded torch model."""

    name = "torch"
    order = 20  # auto: wherever llama.cpp does not suit
    shares_torch_base = True

    @classmethod
    def suits(cls, base: Base) -> bool:
        return True

    @classmethod
    def create(cls, base: Base, n_ctx: int = 4096, threads: int | None = None) -> TorchServeEngine:
        return cls(base, max_context=n_ctx)

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
