"""The teacher's greedy answers with its module outputs recorded on the way: the fit's targets at no extra pass.

A greedy decoder already runs the teacher (the manifesto in context) over every position the fit reads: the prompt's
last token in the prefill, then each answer token as it is fed back. Forward hooks keep each target module's output at
the newest column, so the separate teacher-forced pass over prompt + answer (a third of a compile on CPU) is not needed.
The last answer token is never fed back, so a row of T answer tokens yields T positions: the prompt's last token and
the first T - 1 answer tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from credo.base import Base, Prompt


@dataclass
class Recorded:
    """Per prompt: the answer ids; per module: (sum of answer lengths, out) outputs, rows in prompt order; the final
    hidden state at each prompt's last token (the first answer token's distribution, for the quick look), then the
    same for each look-only prompt."""

    answers: list[list[int]]
    outputs: dict[str, torch.Tensor]
    first_final: torch.Tensor
    look_final: torch.Tensor | None = None


def generate_recording(base: Base, modules: dict[str, torch.nn.Module], context: str, prompts: list[Prompt], tokens: int,
                       batch: int = 64, look: list[Prompt] | None = None, inputs: dict[str, torch.nn.Module] | None = None
                       ) -> Recorded:
    """Greedy answers of up to `tokens` tokens from the base with `context` ahead, recording `modules` as they run.

    `inputs` are recorded too, by what enters them rather than what leaves (under their own keys in `outputs`; e.g. a
    layer's input norm, whose input is the residual stream). `look` prompts ride along for their first answer token
    only: they share the batch's prefill and leave the batch after it, so the quick look needs no teacher pass of its own."""
    from credo.runtime.teacher import Runner

    entering = inputs or {}
    steps: dict[str, list[torch.Tensor]] = {}  # per module, one (rows, out) per forward call of the latest entry
    finals: list[torch.Tensor] = []  # the final hidden state at the newest column, per forward call of the latest entry

    @contextlib.contextmanager
    def recording() -> Iterator[None]:
        # entered once for the manifesto's own prefill, then once per batch: each entry starts afresh
        for name in [*modules, *entering]:
            steps[name] = []
        finals.clear()
        handles = [mod.register_forward_hook(lambda m, i, o, name=name: steps[name].append(o[:, -1].detach().clone()))
                   for name, mod in modules.items()]
        handles += [mod.register_forward_pre_hook(lambda m, i, name=name: steps[name].append(i[0][:, -1].detach().clone()))
                    for name, mod in entering.items()]
        handles.append(base.model.model.norm.register_forward_hook(lambda m, i, o: finals.append(o[:, -1].detach().clone())))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    runner = Runner(base, context, recording, batch=batch)
    rows_all = list(prompts) + list(look or [])
    answers: list[list[int]] = []
    got: dict[str, list[torch.Tensor]] = {name: [] for name in [*modules, *entering]}
    first: list[torch.Tensor] = []
    for lo in range(0, len(rows_all), batch):
        part_prompts = rows_all[lo : lo + batch]
        limits = [tokens if lo + i < len(prompts) else 1 for i in range(len(part_prompts))]
        held: list[list[int]] = []  # per forward call, the prompt each of its rows answers (finished rows leave the batch)
        part = [a.ids[:tokens] for a in runner.generate_batch(part_prompts, tokens, topk=0, on_step=lambda a: held.append(list(a)), limits=limits)]
        answers += part
        # a row's k-th appearance in a forward call fed the prompt's end (k = 0) or answer token k - 1: row r needs its
        # first len(answer r) appearances; the prefill may take several calls (rows grouped by length)
        seen: list[list[int]] = [[] for _ in part]  # per row, its outputs' indices in the calls' concatenation
        flat = 0
        for rows in held:
            for j, r in enumerate(rows):
                seen[r].append(flat + j)
            flat += len(rows)
        index = torch.tensor([k for r in range(len(part)) if lo + r < len(prompts) for k in seen[r][: len(part[r])]], dtype=torch.long)
        for name in got:
            got[name].append(torch.cat(steps[name])[index])
        first.append(torch.cat(finals)[torch.tensor([s[0] for s in seen])])
    finals_all = torch.cat(first)
    outputs = {name: torch.cat(rows) for name, rows in got.items()}
    return Recorded(answers[: len(prompts)], outputs, finals_all[: len(prompts)], finals_all[len(prompts) :] if look else None)
