"""Realistic fidelity and facts kept: how a layer does on the messages users write (`credo.realistic`).

One implementation for `credo eval`, the compile report and `bench/realistic.py`, so the three give the same figure.
Fidelity is the project's one formula (`credo.runtime.fidelity`): 1 − KL(teacher‖row)/KL(teacher‖base), per token of the
teacher's greedy answers, here to the realistic messages (two-turn items with their earlier exchange in the transcript),
overall, per item type and per clause. The passes are the compilers' batched ones (`credo.runtime.teacher.Runner`):
a whole set costs a few batched generations, not one generation per message.

Facts kept: for each fact item, the summed log-probability of the fact and of each close alternative as the opening
of the answer, on the eval scorer (`credo.eval.scorer.Row.choice_logprobs`); a row gives the fact when it ranks it
first. The teacher sets which items count (those where it gives the fact); a layer keeps a fact when it gives it on
one of those.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from credo.eval.scorer import Row
from credo.layers.layer import Layer
from credo.layers.registry import teacher_layer
from credo.manifesto import manifesto_context
from credo.realistic import TYPES, Item
from credo.runtime.fidelity import fidelity_from_kl, kl_each

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto
    from credo.realistic import RealisticSet
    from credo.runtime.teacher import Runner

Messages = list[dict[str, str]]
KL_CHUNK = 4  # conversations per KL pass: their full-vocabulary logits over 24-token answers stay near 100 MB
COMPILE_ITEMS = 8  # messages the compile report answers, spread over the item types: a look, not the eval
COMPILE_FACTS = 6  # fact questions it checks, spread over the set's


def spread(items: Sequence[Item], count: int | None) -> list[Item]:
    """Items taken round-robin over their types (file order within a type), so a cap keeps every type."""
    by_type = {t: [i for i in items if i.type == t] for t in TYPES}
    out: list[Item] = []
    for k in range(max((len(v) for v in by_type.values()), default=0)):
        out += [v[k] for v in by_type.values() if k < len(v)]
    return out[:count] if count is not None else out


@dataclass
class ItemKL:
    """Per row, the summed KL(teacher‖row) of each conversation; `tokens` per conversation (the teacher's answer)."""

    kl: dict[str, list[float]]
    tokens: list[int]

    def fidelity(self, idx: Sequence[int] | None = None, reference: str = "base") -> dict[str, float]:
        """Token-weighted fidelity of every row over the conversations `idx` (all when None)."""
        idx = range(len(self.tokens)) if idx is None else idx
        n = sum(self.tokens[i] for i in idx)
        kl = {row: sum(v[i] for i in idx) / max(n, 1) for row, v in self.kl.items()}
        return {row: fidelity_from_kl(v, kl[reference]) for row, v in kl.items()}


def item_kl(teacher: Runner, rows: dict[str, Runner], convs: Sequence[Messages], answer_tokens: int) -> ItemKL:
    """The teacher answers every conversation greedily; each row's KL to it on those answers, per conversation.

    Conversations go through in order of length, a few at a time, right padded: no real token sees a pad (nor a pad
    inside a sliding attention window), so each figure is what the engine computes for that conversation alone."""
    ids = [teacher.conv(c) for c in convs]
    order = sorted(range(len(convs)), key=lambda i: len(ids[i]))
    generated = teacher.generate([convs[i] for i in order], answer_tokens, topk=0)
    answers: list[list[int]] = [[] for _ in convs]
    for i, a in zip(order, generated):
        answers[i] = a.ids
    kl: dict[str, list[float]] = {name: [0.0] * len(convs) for name in rows}
    order = sorted(range(len(convs)), key=lambda i: len(ids[i]) + len(answers[i]))
    for start in range(0, len(order), KL_CHUNK):
        chunk = order[start : start + KL_CHUNK]
        seqs = [ids[i] + answers[i][:-1] for i in chunk]
        keep = [(len(ids[i]) - 1, len(ids[i]) - 1 + len(answers[i])) for i in chunk]
        t_logits = teacher.forward(seqs, keep)
        r_logits = [r.forward(seqs, keep) for r in rows.values()]
        for j, i in enumerate(chunk):
            for name, each in zip(rows, kl_each(t_logits[j], *(r[j] for r in r_logits))):
                kl[name][i] = float(each.sum())
    return ItemKL(kl, [len(a) for a in answers])


def fact_firsts(rows: dict[str, Row], facts: Sequence[Item]) -> dict[str, list[bool]]:
    """Per row, per fact item: whether the fact outranks every alternative as the answer's opening (summed
    log-probability; the conversation runs once per row and the choices after it, as every eval choice is scored)."""
    out: dict[str, list[bool]] = {name: [] for name in rows}
    for item in facts:
        for name, row in rows.items():
            scores = row.choice_logprobs(row.chat_ids(item.messages), [row.answer_ids(t) for t in (item.fact, *item.alternatives)])
            out[name].append(scores[0] > max(scores[1:]))
    return out


def facts_kept(firsts: dict[str, list[bool]], teacher: str = "teacher") -> dict[str, dict[str, int]]:
    """Per row: facts it gives where the teacher gives them (`kept`), out of `teacher_gives`, of `items`."""
    gives = firsts[teacher]
    return {name: {"kept": sum(g and t for g, t in zip(v, gives)), "teacher_gives": sum(gives), "items": len(gives)}
            for name, v in firsts.items()}


def figures(base: Base, manifesto: Manifesto, layers: dict[str, Layer | None], items: Sequence[Item], answer_tokens: int = 24,
            facts: Sequence[Item] | None = None) -> dict[str, Any]:
    """Realistic fidelity of each layer (and of the bare base, its zero), overall, per type and per clause, and facts
    kept; the teacher is the base with `manifesto` in context. `facts` are the fact items to check (default: those
    among `items`; they cost no generation, so a capped run can still check them all)."""
    from credo.runtime.teacher import Runner

    teacher = teacher_layer(manifesto, base)
    named = {k: v for k, v in layers.items() if k not in ("base", "teacher")}
    runners = {"base": Runner(base, "")} | {k: Runner.for_layer(base, v) for k, v in named.items()}
    kl = item_kl(Runner.for_layer(base, teacher), runners, [i.messages for i in items], answer_tokens)
    out: dict[str, Any] = {"items": len(items), "tokens": sum(kl.tokens), "answer_tokens": answer_tokens,
                           "fidelity": _rounded(kl.fidelity())}
    out["kl"] = {name: round(sum(v) / max(sum(kl.tokens), 1), 6) for name, v in kl.kl.items()}
    out["by_type"] = {t: {"items": len(ix), "fidelity": _rounded(kl.fidelity(ix))} for t in TYPES if (ix := _where(items, type=t))}
    clauses = dict.fromkeys(i.clause for i in items if i.clause)
    out["by_clause"] = {c: {"items": len(ix), "fidelity": _rounded(kl.fidelity(ix))} for c in clauses if (ix := _where(items, clause=c))}
    facts = [i for i in items if i.type == "fact"] if facts is None else list(facts)
    if facts:
        rows = {"teacher": Row("teacher", "teacher", base, teacher), "base": Row("base", "base", base)}
        rows |= {k: Row(k, "layer", base, v) for k, v in named.items()}
        out["facts"] = facts_kept(fact_firsts(rows, facts))
    return out


def _where(items: Sequence[Item], **match: str) -> list[int]:
    return [k for k, i in enumerate(items) if all(getattr(i, f) == v for f, v in match.items())]


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def compile_figures(layer: Layer, base: Base, found: RealisticSet, count: int = COMPILE_ITEMS, facts: int = COMPILE_FACTS,
                    answer_tokens: int = 24) -> dict[str, Any] | None:
    """What `credo compile` records about a new layer on the manifesto's realistic set; None for a layer that is the
    teacher itself (its context is the manifesto's and it leaves the forward pass alone: fidelity 1 by construction)."""
    if type(layer).applied is Layer.applied and layer.context(base) == manifesto_context(layer.manifesto, base):
        return None
    start = time.perf_counter()
    every = found.facts
    checked = [every[i * len(every) // facts] for i in range(facts)] if len(every) > facts else every
    fig = figures(base, layer.manifesto, {"layer": layer}, spread(found.items, count), answer_tokens, facts=checked)
    out: dict[str, Any] = {"fidelity_realistic": fig["fidelity"]["layer"]}
    out["realistic"] = {
        "set": str(found.path), "items": fig["items"], "answer_tokens": answer_tokens,
        "by_type": {t: v["fidelity"]["layer"] for t, v in fig["by_type"].items()},
        "by_clause": {c: v["fidelity"]["layer"] for c, v in fig["by_clause"].items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    if "facts" in fig:
        kept = fig["facts"]["layer"]
        out["realistic"]["facts_kept"] = f"{kept['kept']}/{kept['teacher_gives']} (of {kept['items']} fact questions)"
    return out


def summary_line(report: dict[str, Any], kind: str) -> str | None:
    """Template held-out and realistic fidelity side by side, from a layer's compile report (None without realistic)."""
    if "fidelity_realistic" not in report:
        return None
    template = report.get(f"fidelity_{kind}")
    label = "template held-out"
    if template is None and "first_token_fidelity_heldout" in report:
        template, label = report["first_token_fidelity_heldout"], "template held-out (first token)"
    facts = report.get("realistic", {}).get("facts_kept")
    return (f"fidelity: {label} {template:.2f}, " if isinstance(template, (int, float)) else "fidelity: ") + \
        f"realistic {report['fidelity_realistic']:.2f}" + (f"; facts kept {facts}" if facts else "")
