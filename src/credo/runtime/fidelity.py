"""Fidelity: how closely a layer reproduces the teacher (the base with the manifesto in context).

fidelity = 1 − KL(teacher ‖ row) / KL(teacher ‖ base), averaged over the tokens of the teacher's own greedy answers to
held-out prompts. 1 means the layer behaves like the teacher; 0 means no closer than the bare base; below 0, further.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from credo.runtime.identity import Teacher
from credo.runtime.torch_engine import GenerationStats, TorchEngine

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto
    from credo.runtime.identity import Identity


@dataclass
class Fidelity:
    """Per row: mean KL(teacher‖row) per token and fidelity; `kl_base` is the denominator."""

    kl: dict[str, float] = field(default_factory=dict)
    fidelity: dict[str, float] = field(default_factory=dict)
    kl_base: float = 0.0
    prompts: int = 0
    tokens: int = 0


def kl_from_logits(teacher_logits: torch.Tensor, row_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ row) at each position, over the full vocabulary. (T, V), (T, V) -> (T,)"""
    return kl_each(teacher_logits, row_logits)[0]


def kl_each(teacher_logits: torch.Tensor, *rows_logits: torch.Tensor) -> list[torch.Tensor]:
    """KL(teacher ‖ row) per position for several rows against one teacher, whose log-softmax over the 262k-wide
    vocabulary is then taken once."""
    lt = torch.log_softmax(teacher_logits.float(), -1)
    pt = lt.exp()
    return [(pt * (lt - torch.log_softmax(r.float(), -1))).sum(-1) for r in rows_logits]


def teacher_answer(teacher: TorchEngine, prompt: str, max_tokens: int) -> list[int]:
    stats = GenerationStats()
    for _ in teacher.generate(prompt, max_tokens=max_tokens, stats=stats):
        pass
    ids = list(stats.token_ids)
    if stats.finish_reason == "stop" and len(ids) < max_tokens:
        ids.append(teacher.base.tokenizer.eos_token_id)
    return ids or [teacher.base.tokenizer.eos_token_id]


def measure(
    base: Base,
    manifesto: Manifesto,
    rows: dict[str, Identity | None],
    prompts: Sequence[str],
    max_tokens: int = 24,
    progress: bool = True,
) -> Fidelity:
    """Score every row on the same teacher answers; the bare base is always scored too, as the denominator."""
    teacher = TorchEngine(base, Teacher.of(manifesto, base))
    engines = {"base": TorchEngine(base, None)} | {name: TorchEngine(base, layer) for name, layer in rows.items() if name != "base"}
    sums = {name: 0.0 for name in engines}
    tokens = 0
    for prompt in tqdm(prompts, desc="fidelity", disable=not progress, leave=False):
        answer = teacher_answer(teacher, prompt, max_tokens)
        t_logits, _ = teacher.answer_logits(prompt, answer)
        for name, engine in engines.items():
            r_logits, _ = engine.answer_logits(prompt, answer)
            sums[name] += float(kl_from_logits(t_logits, r_logits).sum())
        tokens += len(answer)
    kl = {name: s / max(tokens, 1) for name, s in sums.items()}
    result = Fidelity(kl=kl, kl_base=kl["base"], prompts=len(prompts), tokens=tokens)
    result.fidelity = {name: fidelity_from_kl(v, kl["base"]) for name, v in kl.items()}
    return result


def fidelity_from_kl(kl_row: float, kl_base: float) -> float:
    return 1.0 - kl_row / kl_base if kl_base > 0 else float("nan")
