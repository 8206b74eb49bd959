"""A manifesto's realistic set: messages written as users write them, kept apart from everything a compile reads.

The template probes (`credo.probes`) fill the same few sentences with each clause and split them by hash, so a
held-out probe is a template the fit has seen filled with a clause it has seen elsewhere. A realistic set is the
yardstick that is not built from the manifesto's words: hand-written messages (on-topic questions, off-topic requests,
pushes against a clause, questions whose answer is a fact the manifesto states, two-turn exchanges) in a JSONL sidecar
beside the manifesto (`pirate.md` -> `pirate.realistic.jsonl`), one object per line:

    {"type": "fact", "clause": "hours", "messages": [{"role": "user", "content": "r u open sundays?"}],
     "fact": "closed on Sundays", "alternatives": ["open on Sundays", "open on Sunday mornings"]}

`messages` alternate user / assistant and end on a user turn; a `two-turn` item carries an earlier exchange. `fact`
and `alternatives` (close wrong answers) belong to `fact` items alone. Blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credo.errors import CredoError

if TYPE_CHECKING:
    from credo.manifesto import Manifesto

TYPES = ("on-topic", "off-topic", "push", "fact", "two-turn")
SUFFIX = ".realistic.jsonl"
KEYS = {"messages", "type", "clause", "fact", "alternatives"}
MAX_BYTES = 1 << 20  # a hand-written set is a few KiB: anything near this is the wrong file


class RealisticError(CredoError):
    """A realistic set cannot be used (missing, malformed line, unknown clause)."""


@dataclass(frozen=True)
class Item:
    """One realistic message (with any earlier turns) and what it tests."""

    turns: tuple[tuple[str, str], ...]  # (role, content), ending on the user's message
    type: str
    clause: str | None = None
    fact: str | None = None
    alternatives: tuple[str, ...] = ()
    line: int = 0

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.turns]

    @property
    def user_texts(self) -> list[str]:
        """Every user message of the item: what a compile must never have read."""
        return [c for r, c in self.turns if r == "user"]


@dataclass(frozen=True)
class RealisticSet:
    path: Path
    items: tuple[Item, ...]

    def of_type(self, kind: str) -> list[Item]:
        return [i for i in self.items if i.type == kind]

    @property
    def facts(self) -> list[Item]:
        return self.of_type("fact")


def sidecar_path(manifesto_path: str | Path) -> Path:
    """Where a manifesto's realistic set lives: beside it, `NAME.md` -> `NAME.realistic.jsonl`."""
    p = Path(manifesto_path)
    return p.with_name(p.stem + SUFFIX)


def find_set(manifesto: Manifesto, source: str | Path | None = None) -> Path | None:
    """The sidecar of `source` (default: the file the manifesto was read from), or None when it has none."""
    src = str(source if source is not None else manifesto.source)
    if not src or src.startswith("<") or "#shuffled" in src:
        return None
    path = sidecar_path(src)
    return path if path.is_file() else None


def load_set(path: str | Path, manifesto: Manifesto | None = None) -> RealisticSet:
    """Read and check a realistic set; clause ids are checked against `manifesto` when it is given."""
    path = Path(path)
    if not path.is_file():
        raise RealisticError(f"realistic set {path} does not exist or is not a file")
    if path.stat().st_size > MAX_BYTES:
        raise RealisticError(f"realistic set {path} is over {MAX_BYTES} bytes; it should be a few dozen hand-written lines")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RealisticError(f"realistic set {path} is not valid UTF-8 (byte {e.start})") from None
    clause_ids = set(manifesto.clause_ids) if manifesto is not None else None
    items: list[Item] = []
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        item = _item(line, f"{path} line {lineno}", lineno, clause_ids)
        key = tuple((r, _norm(c)) for r, c in item.turns)
        if key in seen:
            raise RealisticError(f"{path} line {lineno}: the same messages as line {seen[key]}")
        seen[key] = lineno
        items.append(item)
    if not items:
        raise RealisticError(f"realistic set {path} has no items")
    return RealisticSet(path, tuple(items))


def load_for(manifesto: Manifesto, path: str | Path | None = None, source: str | Path | None = None) -> RealisticSet | None:
    """The manifesto's set: `path` when given, else the sidecar of `source` or of the manifesto's own file."""
    found = Path(path) if path is not None else find_set(manifesto, source)
    return load_set(found, manifesto) if found is not None else None


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _item(line: str, where: str, lineno: int, clause_ids: set[str] | None) -> Item:
    try:
        obj: Any = json.loads(line)
    except json.JSONDecodeError as e:
        raise RealisticError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RealisticError(f"{where}: each line must be a JSON object")
    unknown = set(obj) - KEYS
    if unknown:
        raise RealisticError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KEYS))}")
    kind = obj.get("type")
    if kind not in TYPES:
        raise RealisticError(f"{where}: type must be one of {', '.join(TYPES)}, not {kind!r}")
    turns = _turns(obj.get("messages"), where)
    if kind == "two-turn" and len(turns) < 3:
        raise RealisticError(f"{where}: a two-turn item needs an earlier user / assistant exchange before the last message")
    clause = obj.get("clause")
    if clause is not None and (not isinstance(clause, str) or not clause):
        raise RealisticError(f"{where}: clause must be a clause id (a non-empty string)")
    if clause is not None and clause_ids is not None and clause not in clause_ids:
        raise RealisticError(f"{where}: the manifesto has no clause {clause!r}")
    fact, alts = obj.get("fact"), obj.get("alternatives")
    if kind == "fact":
        if not isinstance(fact, str) or not fact.strip():
            raise RealisticError(f"{where}: a fact item needs `fact`, the answer string the manifesto states")
        if not isinstance(alts, list) or not 2 <= len(alts) <= 6 or not all(isinstance(a, str) and a.strip() for a in alts):
            raise RealisticError(f"{where}: a fact item needs `alternatives`, 2-6 close wrong answers (non-empty strings)")
        if len({_norm(a) for a in [fact, *alts]}) != len(alts) + 1:
            raise RealisticError(f"{where}: the fact and its alternatives must all differ")
    elif fact is not None or alts is not None:
        raise RealisticError(f"{where}: `fact` and `alternatives` belong to fact items only (this one is {kind})")
    return Item(turns, kind, clause, fact.strip() if fact else None, tuple(a.strip() for a in alts or ()), lineno)


def _turns(messages: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(messages, list) or not messages:
        raise RealisticError(f"{where}: `messages` must be a non-empty list of {{role, content}} objects")
    turns = []
    for i, m in enumerate(messages):
        want = "user" if i % 2 == 0 else "assistant"
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise RealisticError(f"{where}: message {i + 1} must be an object with exactly `role` and `content`")
        if m["role"] != want:
            raise RealisticError(f"{where}: message {i + 1} must be from the {want} (turns alternate, starting with the user)")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise RealisticError(f"{where}: message {i + 1} has empty content")
        turns.append((m["role"], m["content"].strip()))
    if turns[-1][0] != "user":
        raise RealisticError(f"{where}: the last message must be the user's (the one being answered)")
    return tuple(turns)
