"""One row of the report (base, a teacher or a layer) as a log-likelihood scorer.

Every item is scored after the row's context (BOS, plus the manifesto for prompt-like layers). That context is run, or
restored from the layer's saved state, once per row and copied for each item, which removes the dominant cost of
scoring a ~300-token manifesto ahead of thousands of short items. The layer's `applied(model)` is active around every
forward, so a kind that lives in the weights or in hooks is scored exactly as it runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from credo.base import cache_of
from credo.layers.layer import Layer
from credo.runtime.prefix import PrefixState
from credo.runtime.torch_engine import TorchEngine

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto

MAX_BATCH = 8


@dataclass
class Row:
    """A base with at most one layer, ready to score; `role` is base, teacher, layer or control."""

    name: str
    role: str
    base: Base
    layer: Layer | None = None
    folder: Path | None = None
    group: str = ""  # the manifesto (sha256) this row is measured against; '' for the base
    compile_seconds: float = 0.0
    engine: TorchEngine = field(init=False)
    memo: dict[Any, Any] = field(default_factory=dict, repr=False)  # shared between twins (see `share_twins`)
    _state: PrefixState | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.engine = TorchEngine(self.base, self.layer)

    @property
    def manifesto(self) -> Manifesto | None:
        return self.layer.manifesto if self.layer is not None else None

    # --- tokens -------------------------------------------------------------------------------------------------
    def chat_ids(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """The conversation as the engine writes it (after the context, no BOS)."""
        return self.engine.conversation_ids(prompt)

    def answer_ids(self, answer: str) -> list[int]:
        """An answer's tokens as the engine scores them: with one leading space after the transcript's 'Assistant:'."""
        return self.base.answer_ids(answer)

    def text_ids(self, text: str) -> list[int]:
        return self.base.encode(text)

    # --- the context ------------------------------------------------------------------------------------------
    def applied(self) -> contextlib.AbstractContextManager[None]:
        return self.layer.applied(self.base.model) if self.layer is not None else contextlib.nullcontext()

    def context_state(self) -> PrefixState:
        """The KV state after the row's context: the layer's saved state when it has one, else one forward pass."""
        if self._state is None:
            saved = self.layer.prefix_state(self.base) if self.layer is not None else None
            if saved is not None:
                self._state = saved
            else:
                ids = self.engine.context_ids()
                with self.applied():
                    _, cache = self.engine.forward(ids)
                self._state = PrefixState.from_cache(ids, cache)
        return self._state

    @property
    def context_tokens(self) -> int:
        return len(self.context_state().ids)

    # --- forward passes -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _run(self, state: PrefixState, batch: list[list[int]], keep: int) -> torch.Tensor:
        """Run each sequence of `batch` after `state` (right-padded, so no real token sees padding); logits (B, keep, V)."""
        width = max(len(s) for s in batch)
        pad = self.base.tokenizer.pad_token_id or 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in batch], dtype=torch.long, device=self.base.device)
        cache = state.to_cache(self.base.model.config, rows=len(batch), room=width)
        with self.applied():
            out = self.base.forward(ids, cache, keep=keep)
        return out.logits.float()

    @torch.inference_mode()
    def _advance(self, state: PrefixState, ids: list[int], keep: int) -> tuple[PrefixState, torch.Tensor]:
        """Run `ids` after `state`; the new state and the logits of the last `keep` positions (keep, V).

        The vocabulary projection dominates the cost of scoring on a small model, so only needed positions are kept.
        """
        cache = state.to_cache(self.base.model.config)
        with self.applied():
            out = self.base.forward(torch.tensor([ids], device=self.base.device), cache, keep=keep)
        return PrefixState.from_cache(state.ids + ids, cache_of(out)), out.logits[0].float()

    def choice_logprobs(self, prefix: list[int], choices: list[list[int]]) -> list[float]:
        """Summed log-probability of each choice's tokens after the context and `prefix`.

        The prefix and the choices' common leading tokens run once; the rest runs in right-padded batches.
        """
        if not prefix or any(not c for c in choices):
            raise ValueError("prefix and choices must be non-empty")
        key = ("choices", tuple(prefix), tuple(tuple(c) for c in choices))
        if key not in self.memo:
            self.memo[key] = self._choice_logprobs(prefix, choices)
        return list(self.memo[key])

    def _choice_logprobs(self, prefix: list[int], choices: list[list[int]]) -> list[float]:
        common = 0
        while all(len(c) > common + 1 for c in choices) and len({c[common] for c in choices}) == 1:
            common += 1
        head = prefix + choices[0][:common]
        state, logits = self._advance(self.context_state(), head, keep=common + 1)
        first = torch.log_softmax(logits[-1], -1)
        lead = float(torch.log_softmax(logits[:-1], -1)
                     .gather(-1, torch.tensor(head[len(prefix):]).unsqueeze(-1)).sum()) if common else 0.0
        scores = [lead + float(first[c[common]]) for c in choices]
        rest = [(i, c[common:]) for i, c in enumerate(choices) if len(c) > common + 1]
        for start in range(0, len(rest), MAX_BATCH):
            chunk = rest[start : start + MAX_BATCH]
            width = max(len(t) - 1 for _, t in chunk)
            out = torch.log_softmax(self._run(state, [t[:-1] for _, t in chunk], keep=width), -1)
            for b, (i, tail) in enumerate(chunk):
                targets = torch.tensor(tail[1:])
                scores[i] += float(out[b, : len(tail) - 1].gather(-1, targets.unsqueeze(-1)).sum())
        return scores

    def token_logprobs(self, ids: list[int]) -> torch.Tensor:
        """Log-probability of each of `ids[1:]` after the context and the tokens before it (perplexity scoring)."""
        key = ("tokens", tuple(ids))
        if key not in self.memo:
            logits = self._run(self.context_state(), [ids[:-1]], keep=len(ids) - 1)[0]
            self.memo[key] = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        return self.memo[key]

    def answer_logits(self, prefix: list[int], answer: list[int]) -> torch.Tensor:
        """Teacher-forced logits at every position of `answer` after the context and `prefix` (len(answer), V)."""
        seq = prefix + answer[:-1]
        logits = self._run(self.context_state(), [seq], keep=len(answer))[0]
        return logits

    def mean_logprobs(self, prefix: list[int], answers: list[list[int]]) -> list[float]:
        """Mean per-token log-probability of each answer after `prefix` (length-normalised, for free-form answers)."""
        return [s / len(a) for s, a in zip(self.choice_logprobs(prefix, answers), answers)]


def payload_bytes(folder: Path | None, files: dict[str, Any] | None) -> int:
    """Bytes a layer keeps besides its manifesto text: the payload files listed in its layer.json."""
    if folder is None or not files:
        return 0
    return sum((folder / rel).stat().st_size for rel in files if rel != "manifesto.md" and (folder / rel).is_file())


def share_twins(rows: list[Row]) -> list[list[str]]:
    """Let rows that are provably the same computation share one score memo, and return the groups that do.

    Two rows are twins when neither changes the forward pass (their kind keeps `Layer.applied` as is) and their
    context states are bitwise equal (e.g. the teacher, a prompt layer and a cache layer of one manifesto). Their
    scores would be identical to the last bit, so each item is scored once for all of them.
    """
    groups: list[list[Row]] = []
    for row in rows:
        if row.layer is not None and type(row.layer).applied is not Layer.applied:
            continue
        state = row.context_state()
        for group in groups:
            other = group[0].context_state()
            if (other.ids == state.ids and other.seen == state.seen
                    and all(torch.equal(a, b) for a, b in zip(other.keys + other.values, state.keys + state.values))):
                row.memo = group[0].memo
                group.append(row)
                break
        else:
            groups.append([row])
    return [[r.name for r in g] for g in groups if len(g) > 1]
