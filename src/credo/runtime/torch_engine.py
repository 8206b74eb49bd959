"""The torch engine: generation and scoring on a Base with at most one Layer active (a stack counts as one)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from credo.base import cache_of

if TYPE_CHECKING:
    from credo.base import Base
    from credo.runtime.identity import Identity

Messages = list[dict[str, str]]


@dataclass
class Prefilled:
    """The state after reading the prompt: the KV cache, the logits for the first new token, and what it cost."""

    cache: Any
    logits: torch.Tensor  # (vocab,)
    prompt_tokens: int  # tokens actually run through the model for this request
    context_tokens: int  # tokens of layer context ahead of the conversation (run or restored)
    seconds: float = 0.0


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    context_tokens: int = 0
    completion_tokens: int = 0
    ttft_seconds: float = 0.0
    total_seconds: float = 0.0
    finish_reason: str = "length"
    token_ids: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class TorchEngine:
    def __init__(self, base: Base, layer: Identity | None = None):
        self.base = base
        self.layer = layer
        self._context_ids: list[int] | None = None

    # --- tokens -------------------------------------------------------------------------------------------------
    def context_ids(self) -> list[int]:
        """BOS plus the layer's context: the part of every prompt that does not depend on the request."""
        if self._context_ids is None:
            text = self.layer.context(self.base) if self.layer else ""
            self._context_ids = self.base.encode(text, bos=True)
        return self._context_ids

    def conversation_ids(self, prompt: str | Messages) -> list[int]:
        return self.base.chat_ids(prompt)

    # --- forward ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, ids: list[int], cache: Any = None, keep: int = 1) -> tuple[torch.Tensor, Any]:
        """Run `ids` after `cache` (None: from scratch); return the logits of the last `keep` positions and the cache."""
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache(config=self.base.model.config)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.base.device)
        out = self.base.forward(input_ids, cache, keep=keep)
        return out.logits[0].float(), cache_of(out)

    def prefill(self, prompt: str | Messages) -> Prefilled:
        """Read the context (or restore its saved state) and then the conversation.

        The context is always run as its own forward pass, so a saved state and a fresh prefill are bitwise the same.
        """
        start = time.perf_counter()
        conv = self.conversation_ids(prompt)
        state = self.layer.prefix_state(self.base) if self.layer and conv else None
        with self._applied():
            if state is not None:
                cache, run = state.to_cache(self.base.model.config), 0
                n_context = len(state.ids)
            else:
                ctx = self.context_ids()
                head, conv = (ctx, conv) if conv else (ctx[:-1], ctx[-1:])  # an empty prompt: the answer follows the context
                cache = self.forward(head)[1] if head else None
                run, n_context = len(head), len(ctx)
            logits, cache = self.forward(conv, cache)
        return Prefilled(cache, logits[-1], run + len(conv), n_context, time.perf_counter() - start)

    def _applied(self):
        import contextlib

        return self.layer.applied(self.base.model) if self.layer else contextlib.nullcontext()

    # --- generation ---------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Messages,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stats: GenerationStats | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Stream the answer as text pieces; greedy when temperature is 0. Stops at EOS or the transcript's next turn,
        or as soon as `stop()` is true (checked before every token: a server's cancel or deadline)."""
        stats = stats if stats is not None else GenerationStats()
        start = time.perf_counter()
        pre = self.prefill(prompt)
        stats.prompt_tokens, stats.context_tokens = pre.prompt_tokens, pre.context_tokens
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        stop_ids, stops = self.base.stop_ids, self.base.stop_strings
        logits, cache = pre.logits, pre.cache
        ids: list[int] = []
        emitted = ""
        try:
            with self._applied():
                for step in range(max_tokens):
                    if stop is not None and stop():
                        break
                    token = _pick(logits, temperature, top_p, gen)
                    if step == 0:
                        stats.ttft_seconds = time.perf_counter() - start
                    if token in stop_ids:
                        stats.finish_reason = "stop"
                        break
                    ids.append(token)
                    text = self.base.decode(ids)
                    cut = min((text.find(s) for s in stops if s in text), default=-1)
                    if cut >= 0:
                        if cut > len(emitted):
                            yield text[len(emitted) : cut]
                        emitted = text[:cut]
                        stats.finish_reason = "stop"
                        break
                    safe = _safe_prefix(text, stops)
                    if len(safe) > len(emitted):
                        yield safe[len(emitted) :]
                        emitted = safe
                    if step + 1 < max_tokens:
                        logits, cache = self.forward([token], cache)
                        logits = logits[-1]
                else:
                    text = self.base.decode(ids)
                    if len(text) > len(emitted) and not any(s in text for s in stops):
                        yield text[len(emitted) :]
        finally:  # also when the consumer closes the stream early: the figures say how far it went
            stats.completion_tokens = len(ids)
            stats.token_ids = ids
            stats.total_seconds = time.perf_counter() - start

    def complete(self, prompt: str | Messages, **kwargs: Any) -> str:
        return "".join(self.generate(prompt, **kwargs)).strip()

    # --- scoring ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def continuation_logprobs(self, prompt: str | Messages, continuation: str) -> torch.Tensor:
        """Log-probabilities of each token of `continuation` as the answer to `prompt` (for likelihood scoring)."""
        logits, ids = self.answer_logits(prompt, continuation)
        return torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)

    @torch.inference_mode()
    def answer_logits(self, prompt: str | Messages, answer: str | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at every position of `answer` (teacher-forced after the prompt) and the answer's token ids."""
        pre = self.prefill(prompt)
        ans = self.base.answer_ids(answer) if isinstance(answer, str) else list(answer)
        if not ans:
            return pre.logits[:0], torch.zeros(0, dtype=torch.long)
        with self._applied():
            logits, _ = self.forward(ans[:-1], pre.cache, keep=len(ans) - 1) if len(ans) > 1 else (pre.logits[:0], None)
        full = torch.cat([pre.logits.unsqueeze(0), logits], 0)
        return full, torch.tensor(ans, dtype=torch.long)


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    # shifted, and in float64: any temperature above 0 (even 5e-324) gives 0 for the top token and -inf below, never nan
    probs = torch.softmax((logits.double() - logits.max()) / temperature, -1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))


def _safe_prefix(text: str, stops: list[str]) -> str:
    """The part of `text` that can be shown: no half-decoded character, no tail that may grow into a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold] if hold else text
