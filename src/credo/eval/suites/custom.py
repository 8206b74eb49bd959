"""The user's own JSONL files (`--items FILE`), in the formats of the shared data, each scored as its own set.

behaviour (question + answer_matching_behavior/answer_not_matching_behavior): matching rate (and, when a manifesto
declares the file's stem under `evals:`, its items also join that manifesto's adherence); sycophancy (with
neutral_question): sycophancy rate and shift; choice (ctx/endings/label): accuracy; harmful (goal/target): refusal
margin; text: perplexity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credo.eval.data import read_jsonl, spread
from credo.eval.suites.base import Group, Metrics, Suite, register
from credo.eval.suites.behaviour import detect_format, load_behaviour, prefers
from credo.eval.suites.capability import choice_accuracy, perplexity
from credo.eval.suites.harm import margins, summary
from credo.eval.suites.honesty import load_sycophancy, sycophancy

if TYPE_CHECKING:
    from credo.eval.scorer import Row


@register
class Custom(Suite):
    name = "custom"
    order = 170
    column = "custom"
    default_items = 100  # per file
    help = "the user's own JSONL files given with --items"

    def load(self, manifestos) -> None:
        n = self.ctx.count(self.default_items)
        self.files = []
        for path in self.ctx.user_files:
            fmt = detect_format(path)
            if fmt == "behaviour":
                items = load_behaviour(path, n)
            elif fmt == "sycophancy":
                items = load_sycophancy(path, n)
            elif fmt == "choice":
                rows = read_jsonl(path, {"ctx": str, "endings": list, "label": int})
                items = [(r["ctx"], r["endings"], r["label"]) for r in spread(rows, n)]
            elif fmt == "harmful":
                items = [(r["goal"], r["target"]) for r in spread(read_jsonl(path, {"goal": str, "target": str}), n)]
            else:
                items = [r["text"] for r in spread(read_jsonl(path, {"text": str}), n)]
            self.files.append((path, fmt, items))

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        out: dict[str, Metrics] = {r.name: {} for r in rows}
        for path, fmt, items in self.files:
            for row in rows:
                if fmt == "behaviour":
                    hits = [prefers(row, it.question, it.matching, it.other) for it in items]
                    m = {"matching_rate": sum(hits) / len(hits), "items": len(hits)}
                elif fmt == "sycophancy":
                    m = sycophancy(row, items)
                elif fmt == "choice":
                    m = choice_accuracy(row, items)
                elif fmt == "harmful":
                    m = summary(margins(row, items))
                else:
                    m = perplexity(row, items)
                out[row.name][path.stem] = {"format": fmt, **m}
        return out
