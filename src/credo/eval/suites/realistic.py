"""Realistic fidelity and facts kept, beside the template fidelity: the manifesto's hand-written user messages.

The template column (`fidelity`) is measured on held-out probes that are templates a compile has seen, filled with
clauses it has seen; this one on the manifesto's realistic set (`credo.realistic`), which no compile reads. A manifesto
without a set gets no figures here. The work is `credo.eval.realistic.figures`, the same code the compile report and
bench/realistic.py run; answers are as long as the template column's, so the two read side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credo.eval.realistic import figures, spread
from credo.eval.suites.base import Cells, Column, Group, Metrics, Suite, dig, register
from credo.eval.suites.fidelity import ANSWER_TOKENS
from credo.realistic import load_set

if TYPE_CHECKING:
    from credo.eval.scorer import Row
    from credo.manifesto import Manifesto
    from credo.realistic import RealisticSet


def facts_cell(c: Cells) -> str | None:
    """'kept/teacher gives' (the base against each manifesto in turn when there are several)."""
    def one(res: dict) -> str | None:
        facts = dig(res, "realistic", "facts")
        return f"{facts['kept']}/{facts['teacher_gives']}" if facts else None

    if not c.by_manifesto:
        return one(c.res)
    cells = [one(v) for v in c.by_manifesto.values()]
    return " / ".join(x or "—" for x in cells) if any(cells) else None


@register
class RealisticSuite(Suite):
    name = "realistic"
    order = 20
    columns = (Column("realistic", "fidelity (realistic)", lambda c: c.per_manifesto("realistic", "fidelity"), order=20),
               Column("facts_kept", "facts kept", lambda c: facts_cell(c), "{}", order=21))
    column = "realistic fidelity"
    per_manifesto = True
    default_items = 16  # messages, spread over the item types; fact items are all checked (no generation)
    help = "fidelity on the manifesto's hand-written user messages (NAME.realistic.jsonl) and facts kept"

    def load(self, manifestos: list[Manifesto]) -> None:
        self.sets: dict[str, RealisticSet | None] = {}
        for m in manifestos:
            path = self.ctx.realistic.get(m.sha256)
            self.sets[m.sha256] = load_set(path, m) if path is not None else None

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        found = self.sets.get(group.manifesto.sha256)
        if found is None:
            return {r.name: {"fidelity": None, "items": 0, "set": None} for r in rows}
        base = group.base.base
        items = spread(found.items, self.ctx.count(self.default_items))
        facts = found.facts[: self.ctx.limit] if self.ctx.limit is not None else found.facts
        keys = {f"row{i}": r for i, r in enumerate(group.layers)}  # row names may be anything; these cannot clash
        fig = figures(base, group.manifesto, {k: r.layer for k, r in keys.items()}, items, ANSWER_TOKENS, facts=facts)
        out: dict[str, Metrics] = {}
        for key, row in [("base", group.base), ("teacher", group.teacher), *keys.items()]:
            out[row.name] = _row_metrics(fig, key, str(found.path))
        return out


def _row_metrics(fig: dict, key: str, path: str) -> Metrics:
    """One row's figures from `figures`' output; the teacher is the reference, so its fidelity is 1 by definition."""
    def fid(d: dict) -> float | None:
        return 1.0 if key == "teacher" else d["fidelity"].get(key)

    metrics: Metrics = {
        "fidelity": fid(fig), "items": fig["items"], "tokens": fig["tokens"], "set": path,
        "by_type": {t: {"items": v["items"], "fidelity": fid(v)} for t, v in fig["by_type"].items()},
        "per_clause": {c: {"items": v["items"], "fidelity": fid(v)} for c, v in fig["by_clause"].items()},
    }
    if "facts" in fig:
        metrics["facts"] = fig["facts"][key]
    return metrics
