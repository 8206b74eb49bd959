"""Fidelity: 1 − KL(teacher‖row)/KL(teacher‖base) on the manifesto's held-out prompts (see `credo.runtime.fidelity`).

Computed here on the eval scorer so the teacher's and every row's context is run once, not once per prompt; the
formula, the teacher's greedy answers and the KL are the core's own (`teacher_answer`, `kl_from_logits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm import tqdm

from credo.eval.suites.base import Column, Group, Metrics, Suite, register
from credo.probes import heldout_prompts
from credo.runtime.fidelity import fidelity_from_kl, kl_from_logits

if TYPE_CHECKING:
    from credo.eval.scorer import Row

ANSWER_TOKENS = 16


@register
class FidelitySuite(Suite):
    name = "fidelity"
    order = 10
    columns = (Column("fidelity", "fidelity (template)", lambda c: c.per_manifesto("fidelity", "fidelity"), order=10),)
    column = "fidelity"
    per_manifesto = True
    default_items = 6
    help = "1 - KL(teacher||row)/KL(teacher||base) on held-out prompts drawn from the manifesto"

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        prompts = heldout_prompts(group.manifesto, self.ctx.count(self.default_items))
        sums = {r.name: 0.0 for r in rows}
        tokens = 0
        for prompt in tqdm(prompts, desc="fidelity", disable=not self.ctx.progress, leave=False):
            answer = group.greedy(group.teacher, prompt, ANSWER_TOKENS)
            t_logits = group.teacher.answer_logits(group.teacher.chat_ids(prompt), answer)
            for row in rows:
                key = ("kl", group.teacher.name, prompt, tuple(answer))  # twins share the memo, so each KL runs once
                if key not in row.memo:
                    logits = t_logits if row is group.teacher else row.answer_logits(row.chat_ids(prompt), answer)
                    row.memo[key] = float(kl_from_logits(t_logits, logits).sum())
                sums[row.name] += row.memo[key]
            tokens += len(answer)
        kl = {name: s / max(tokens, 1) for name, s in sums.items()}
        kl_base = kl[group.base.name]
        return {name: {"fidelity": fidelity_from_kl(v, kl_base), "kl": v, "prompts": len(prompts), "tokens": tokens} for name, v in kl.items()}
