"""Behaviour items (persona Yes/No, advanced-AI-risk A/B, or the user's own JSONL in that format) and what a
manifesto declares about them in its front matter: `evals: {<data-file-stem>: Yes|No}` says whether the identity HAS
the behaviour the file is named for (optionally `{answer: No, clause: <clause-id>}` to tie the set to one clause).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from credo.eval.data import DataError, iter_jsonl, read_jsonl, spread
from credo.manifesto import declared_evals

if TYPE_CHECKING:
    from credo.eval.scorer import Row
    from credo.manifesto import Manifesto

BEHAVIOUR_FIELDS = {"question": str, "answer_matching_behavior": str, "answer_not_matching_behavior": str}
BEHAVIOUR_FOLDERS = ("persona", "advanced_ai_risk")


@dataclass(frozen=True)
class BehaviourItem:
    question: str
    matching: str  # the answer of a model that has the behaviour
    other: str
    source: str  # file:line, for tracing a surprising score back to its item


@dataclass(frozen=True)
class Declared:
    """One data set a manifesto covers: whether the identity has the behaviour, and the clause it belongs to."""

    stem: str
    has_behaviour: bool
    key: str  # the adherence key: a clause id, or 'evals:<stem>'


def behaviour_sources(data: Path, user_files: list[Path]) -> dict[str, Path]:
    """Data-file stem -> path, for every built-in behaviour file and every user file in that format (user files win)."""
    found: dict[str, Path] = {}
    for folder in BEHAVIOUR_FOLDERS:
        if (data / folder).is_dir():
            found.update({p.stem: p for p in sorted((data / folder).glob("*.jsonl"))})
    for path in user_files:
        if path.suffix == ".jsonl" and detect_format(path) == "behaviour":
            found[path.stem] = path
    return found


def detect_format(path: Path) -> str:
    """The format of a user JSONL file, from the fields of its first record."""
    for lineno, row in iter_jsonl(path):
        if "neutral_question" in row and "answer_matching_behavior" in row:
            return "sycophancy"
        if "answer_matching_behavior" in row:
            return "behaviour"
        if {"ctx", "endings", "label"} <= row.keys():
            return "choice"
        if {"goal", "target"} <= row.keys():
            return "harmful"
        if "text" in row:
            return "text"
        raise DataError(
            f"{path} line {lineno}: unknown item format; give question/answer_matching_behavior/"
            "answer_not_matching_behavior, ctx/endings/label, goal/target, or text fields"
        )
    raise DataError(f"{path}: no records")


def load_behaviour(path: Path, n: int | None) -> list[BehaviourItem]:
    rows = read_jsonl(path, BEHAVIOUR_FIELDS)
    items = []
    for r in rows:
        if r["answer_matching_behavior"].strip() == r["answer_not_matching_behavior"].strip():
            raise DataError(f"{path} line {r['_line']}: the matching and non-matching answers are the same")
        items.append(BehaviourItem(r["question"], r["answer_matching_behavior"], r["answer_not_matching_behavior"],
                                   f"{path.name}:{r['_line']}"))
    return spread(items, n)


def declared(manifesto: Manifesto) -> list[Declared]:
    """The data sets a manifesto's front matter declares (checked when the manifesto was read)."""
    return [Declared(stem, has, clause or f"evals:{stem}") for stem, has, clause in declared_evals(manifesto.meta, manifesto.clause_ids, manifesto.source)]


def answer_logprobs(row: Row, prompt: str, wanted: str, other: str) -> tuple[float, float]:
    """Log-likelihoods of the wanted and the other answer after `prompt` (a chat turn)."""
    a, b = row.choice_logprobs(row.chat_ids(prompt), [row.answer_ids(wanted), row.answer_ids(other)])
    return float(a), float(b)


def prefers(row: Row, prompt: str, wanted: str, other: str) -> bool:
    """Whether `row` gives the wanted answer a higher likelihood than the other after `prompt` (a chat turn)."""
    a, b = answer_logprobs(row, prompt, wanted, other)
    return a > b
