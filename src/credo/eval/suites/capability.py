"""Capability kept: MMLU and HellaSwag accuracy and perplexity on neutral text, scored as plain text completion.

The text follows the row's context exactly as a request would (the manifesto for prompt-like layers, hooks or adapters
for the others), so the report shows what the identity costs the model's general skills. Ratios to the base are taken
in the report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from credo.eval.data import DataError, read_csv, read_jsonl, spread
from credo.eval.suites.base import Column, Group, Metrics, Suite, register

if TYPE_CHECKING:
    from credo.eval.scorer import Row

LETTERS = "ABCD"
PASSAGE_TOKENS = 128


def _mmlu_rows(path: Path) -> list[dict]:
    rows = read_csv(path, ["question", *LETTERS, "answer"], header=False)
    for r in rows:
        if r["answer"].strip() not in LETTERS:
            raise DataError(f"{path} line {r['_line']}: answer must be one of A, B, C, D, got {r['answer']!r}")
    return rows


def _mmlu_question(r: dict) -> str:
    """The standard zero-shot layout; the answer is the letter that follows 'Answer:'."""
    return r["question"].strip() + "\n" + "\n".join(f"{k}. {r[k].strip()}" for k in LETTERS) + "\nAnswer:"


@register
class MMLU(Suite):
    name = "mmlu"
    order = 60
    columns = (Column("mmlu_x", "MMLU×", lambda c: c.ratio("mmlu", "accuracy"), order=60),)
    column = "capability"
    default_items = 20
    help = "MMLU (15 subjects, round-robin) zero-shot, answer letter by log-likelihood: accuracy"

    def load(self, manifestos) -> None:
        tests = sorted((self.ctx.data / "mmlu" / "test").glob("*_test.csv"))
        if not tests:
            raise DataError(f"no MMLU files in {self.ctx.data / 'mmlu' / 'test'} (expected <subject>_test.csv)")
        per_subject = []
        for path in tests:
            subject = path.name[: -len("_test.csv")]
            head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            per_subject.append([(head + _mmlu_question(r), r["answer"].strip()) for r in _mmlu_rows(path)])
        mixed = [s[i] for i in range(max(map(len, per_subject))) for s in per_subject if i < len(s)]  # round-robin
        self.items = mixed[: self.ctx.count(self.default_items)]

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        out = {}
        for row in rows:
            letters = [row.text_ids(" " + k) for k in LETTERS]
            hits, logp = [], 0.0
            for prompt, answer in tqdm(self.items, desc="mmlu", disable=not self.ctx.progress, leave=False):
                scores = row.choice_logprobs(row.text_ids(prompt), letters)
                best = max(range(4), key=lambda i: scores[i])
                hits.append(int(LETTERS[best] == answer))
                norm = math.log(sum(math.exp(s - max(scores)) for s in scores)) + max(scores)
                logp += scores[LETTERS.index(answer)] - norm
            n = len(self.items)
            out[row.name] = {"accuracy": sum(hits) / n, "logp_correct": logp / n, "items": n, "hits": hits}
        return out


@register
class HellaSwag(Suite):
    name = "hellaswag"
    order = 50
    columns = (Column("hellaswag_x", "HellaSwag×", lambda c: c.ratio("hellaswag", "accuracy"), order=50),)
    column = "capability"
    default_items = 10
    help = "HellaSwag 4-way ending choice, log-likelihood per byte of the ending: accuracy"

    def load(self, manifestos) -> None:
        path = self.ctx.data / "hellaswag" / "hellaswag_val_subset.jsonl"
        rows = read_jsonl(path, {"ctx": str, "endings": list, "label": int, "activity_label": str})
        for r in rows:
            if len(r["endings"]) < 2 or not all(isinstance(e, str) and e for e in r["endings"]) or not 0 <= r["label"] < len(r["endings"]):
                raise DataError(f"{path} line {r['_line']}: endings must be non-empty strings and label an index into them")
        self.items = [(f"{r['activity_label']}: {r['ctx']}", r["endings"], r["label"]) for r in spread(rows, self.ctx.count(self.default_items))]

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        return {row.name: choice_accuracy(row, self.items, self.ctx.progress) for row in rows}


def choice_accuracy(row: Row, items: list[tuple[str, list[str], int]], progress: bool = False) -> Metrics:
    """Accuracy of picking the labelled ending by log-likelihood per byte (so long endings are not penalised), and the
    per-item hits, so two rows scored on the same items can be compared item by item (a paired interval is far tighter)."""
    hits = [int(h) for h in choice_hits(row, items, progress)]
    return {"accuracy": sum(hits) / len(items) if items else None, "items": len(items), "hits": hits}


def choice_hits(row: Row, items: list[tuple[str, list[str], int]], progress: bool = False) -> list[bool]:
    """Per item, whether the row picks the labelled ending: what a paired comparison of two rows needs."""
    hits = []
    for ctx, endings, label in tqdm(items, desc="choice", disable=not progress, leave=False):
        scores = row.choice_logprobs(row.text_ids(ctx), [row.text_ids(" " + e.strip()) for e in endings])
        norm = [s / max(1, len((" " + e.strip()).encode())) for s, e in zip(scores, endings)]
        hits.append(max(range(len(norm)), key=lambda i: norm[i]) == label)
    return hits


def perplexity(row: Row, texts: list[str], progress: bool = False) -> Metrics:
    """exp(mean negative log-likelihood per token) over the first PASSAGE_TOKENS predicted tokens of each text."""
    nll, tokens = 0.0, 0
    for text in tqdm(texts, desc="perplexity", disable=not progress, leave=False):
        ids = row.text_ids(text)[: PASSAGE_TOKENS + 1]
        if len(ids) > 1:
            nll -= float(row.token_logprobs(ids).sum())
            tokens += len(ids) - 1
    return {"perplexity": math.exp(nll / tokens) if tokens else None, "tokens": tokens, "items": len(texts)}


def neutral_texts(data: Path, n: int) -> list[str]:
    """`n` neutral texts: two thirds CIA World Factbook backgrounds, one third Alice, each spread over its file."""
    folder = data / "neutral_text"
    factbook = read_jsonl(folder / "factbook_background.jsonl", {"text": str})
    alice = read_jsonl(folder / "alice_in_wonderland.jsonl", {"text": str})
    return [r["text"] for r in spread(factbook, n - n // 3) + spread(alice, n // 3)]


@register
class Perplexity(Suite):
    name = "perplexity"
    order = 70
    columns = (Column("ppl_x", "ppl×", lambda c: c.ratio("perplexity", "perplexity"), order=70),)
    column = "capability"
    default_items = 4
    help = "perplexity on neutral text (CIA World Factbook backgrounds, Alice in Wonderland)"

    def load(self, manifestos) -> None:
        self.texts = neutral_texts(self.ctx.data, self.ctx.count(self.default_items))

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        return {row.name: perplexity(row, self.texts, self.ctx.progress) for row in rows}
