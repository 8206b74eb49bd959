"""The manifesto: one Markdown document parsed into clauses with stable ids, example exchanges and front matter."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from credo.errors import ManifestoError

if TYPE_CHECKING:
    from credo.base import Base

MAX_BYTES = 64 * 1024
EXAMPLES_HEADINGS = {"examples", "example", "example exchanges", "exchanges"}
_ID_MARK = re.compile(r"\s*\{#([a-z0-9][a-z0-9_.-]*)\}\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_TURN = re.compile(r"^(user|assistant)\s*:\s?(.*)$", re.IGNORECASE)
_STOPWORDS = {"a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "than", "that", "with", "by"}


@dataclass(frozen=True)
class Clause:
    """One rule, belief or note of voice; the unit that evaluation scores adherence on."""

    id: str
    section: str
    text: str


@dataclass(frozen=True)
class Exchange:
    """A worked example: what a user says and how the identity answers."""

    user: str
    assistant: str


@dataclass(frozen=True)
class Manifesto:
    name: str
    description: str
    body: str
    clauses: tuple[Clause, ...]
    examples: tuple[Exchange, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    text: str = ""
    source: str = "<string>"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def clause_ids(self) -> list[str]:
        return [c.id for c in self.clauses]

    def clause(self, clause_id: str) -> Clause:
        for c in self.clauses:
            if c.id == clause_id:
                return c
        raise KeyError(clause_id)

    @classmethod
    def from_file(cls, path: str | Path) -> Manifesto:
        path = Path(path)
        if not path.is_file():
            raise ManifestoError(f"manifesto {path} does not exist or is not a file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ManifestoError(f"manifesto {path} is {size} bytes; the limit is {MAX_BYTES} (64 KiB)")
        return cls.from_bytes(path.read_bytes(), source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<string>") -> Manifesto:
        if len(data) > MAX_BYTES:
            raise ManifestoError(f"manifesto {source} is {len(data)} bytes; the limit is {MAX_BYTES} (64 KiB)")
        if b"\x00" in data:
            raise ManifestoError(f"manifesto {source} looks binary (it has NUL bytes); give a Markdown text file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ManifestoError(f"manifesto {source} is not valid UTF-8 (byte {e.start}); save it as UTF-8") from None
        return cls.from_text(text, source=source)

    @classmethod
    def from_text(cls, text: str, source: str = "<string>") -> Manifesto:
        text = text.lstrip("\ufeff").replace("\r\n", "\n")
        if len(text.encode("utf-8")) > MAX_BYTES:
            raise ManifestoError(f"manifesto {source} is over the 64 KiB limit")
        if not text.strip():
            raise ManifestoError(f"manifesto {source} is empty")
        meta, body = _split_front_matter(text, source)
        body, examples = _split_examples(body, source)
        clauses = _parse_clauses(body)
        if not clauses:
            raise ManifestoError(f"manifesto {source} has no clauses: write at least one list item or paragraph")
        _check_front_matter(meta, [c.id for c in clauses], source)
        name = str(meta.get("name") or _first_heading(body) or Path(source).stem or "manifesto")
        return cls(
            name=name,
            description=str(meta.get("description", "")),
            body=body.strip(),
            clauses=tuple(clauses),
            examples=tuple(examples),
            meta=meta,
            text=text,
            source=source,
        )

    def shuffled(self, seed: int = 0) -> Manifesto:
        """The control: the same words in a random order, so that structure and meaning are gone but the vocabulary stays."""
        import random

        words = self.body.split()
        random.Random(seed).shuffle(words)
        lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
        shuffled_text = "# shuffled\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
        return Manifesto.from_text(shuffled_text, source=f"{self.source}#shuffled{seed}")


def _split_front_matter(text: str, source: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 4)
    if end < 0:
        raise ManifestoError(f"manifesto {source}: front matter opened with '---' on line 1 is never closed")
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", 0) + 2
        raise ManifestoError(f"manifesto {source}: front matter is not valid YAML near line {line}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # YAML that parses but names no real value (a 30 February)
        raise ManifestoError(f"manifesto {source}: front matter has a value YAML cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise ManifestoError(f"manifesto {source}: front matter must be a mapping of keys to values")
    rest = text[end + 4 :]
    return meta, rest.split("\n", 1)[1] if "\n" in rest else ""


def _check_front_matter(meta: dict[Any, Any], clause_ids: list[str], source: str) -> None:
    """Refuse front matter that would only fail later (at eval time): text fields that are not text, bad `evals`."""
    for key in ("name", "description"):
        value = meta.get(key)
        if isinstance(value, (dict, list)):
            raise ManifestoError(f"manifesto {source}: front matter '{key}' must be a line of text")
    declared_evals(meta, clause_ids, source)


def declared_evals(meta: dict[Any, Any], clause_ids: list[str], source: str) -> list[tuple[str, bool, str | None]]:
    """The data sets the front matter's `evals` declares: (data-file stem, whether the identity HAS the behaviour the
    set is named for, the clause it belongs to or None). `evals: {stem: Yes|No}` or `{stem: {answer: No, clause: id}}`."""
    raw = meta.get("evals") or {}
    if not isinstance(raw, dict):
        raise ManifestoError(f"manifesto {source}: front matter 'evals' must map data-set names to Yes or No")
    out = []
    for stem, value in raw.items():
        if not isinstance(stem, (str, int)) or isinstance(stem, bool) or not str(stem).strip():
            raise ManifestoError(f"manifesto {source}: front matter 'evals' has a key {stem!r} that is not a data-set name")
        clause = None
        if isinstance(value, dict):
            clause, value = value.get("clause"), value.get("answer")
            if clause is not None and clause not in clause_ids:
                raise ManifestoError(f"manifesto {source}: evals.{stem} names clause {clause!r}, which it does not have")
        # YAML reads an unquoted Yes/No as a boolean
        answer = ("yes" if value else "no") if isinstance(value, bool) else str(value).strip().lower()
        if answer not in ("yes", "no") or isinstance(value, (dict, list)):
            raise ManifestoError(f"manifesto {source}: evals.{stem} must be Yes or No, got {value!r}")
        out.append((str(stem), answer == "yes", clause))
    return out


def _split_examples(body: str, source: str) -> tuple[str, list[Exchange]]:
    lines = body.split("\n")
    kept: list[str] = []
    example_lines: list[tuple[int, str]] = []
    in_examples = False
    level = 0
    for lineno, line in enumerate(lines, 1):
        m = _HEADING.match(line)
        if m:
            title = m.group(2).strip().lower()
            if title in EXAMPLES_HEADINGS:
                in_examples, level = True, len(m.group(1))
                continue
            if in_examples and len(m.group(1)) <= level:
                in_examples = False
        (example_lines.append((lineno, line)) if in_examples else kept.append(line))
    return "\n".join(kept), _parse_exchanges(example_lines, source)


def _parse_exchanges(lines: list[tuple[int, str]], source: str) -> list[Exchange]:
    turns: list[list[str]] = []  # [role, text]
    for lineno, line in lines:
        m = _TURN.match(line.strip().lstrip("-*> ").replace("**", ""))
        if m:
            turns.append([m.group(1).lower(), m.group(2).strip()])
        elif line.strip() and turns:
            turns[-1][1] += "\n" + line.strip()
        elif line.strip():
            raise ManifestoError(f"manifesto {source} line {lineno}: examples must be 'User:' / 'Assistant:' turns")
    exchanges = []
    for i in range(0, len(turns) - 1, 2):
        (r1, t1), (r2, t2) = turns[i], turns[i + 1]
        if (r1, r2) != ("user", "assistant"):
            raise ManifestoError(f"manifesto {source}: each example must be a 'User:' turn followed by an 'Assistant:' turn")
        exchanges.append(Exchange(t1, t2))
    if len(turns) % 2:
        raise ManifestoError(f"manifesto {source}: the last example has a 'User:' turn with no 'Assistant:' answer")
    return exchanges


def _slug(text: str, words: int = 4) -> str:
    tokens = [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in _STOPWORDS]
    return "-".join(tokens[:words]) or "clause"


def _first_heading(body: str) -> str | None:
    for line in body.split("\n"):
        m = _HEADING.match(line)
        if m:
            return m.group(2).strip()
    return None


def _parse_clauses(body: str) -> list[Clause]:
    """A list item is a clause; a paragraph under a heading is a clause named after the heading.

    Ids are slugs of section and words, so editing one clause's tail, or adding another, leaves the other ids as they were;
    `{#my-id}` at the end of a clause pins its id.
    """
    clauses: list[Clause] = []
    seen: dict[str, int] = {}
    section = ""
    paragraph: list[str] = []
    item: list[str] | None = None

    def add(text: str, default_slug: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        m = _ID_MARK.search(text)
        if m:
            cid, text = m.group(1), text[: m.start()].strip()
            if not text:  # an id mark with no words is no clause
                return
        else:
            prefix = _slug(section, 3)
            cid = f"{prefix}.{default_slug}" if section else default_slug
        n = seen.get(cid, 0) + 1
        seen[cid] = n
        clauses.append(Clause(cid if n == 1 else f"{cid}-{n}", section, text))

    def flush() -> None:
        nonlocal paragraph, item
        if item is not None:
            joined = " ".join(item)
            add(joined, _slug(_ID_MARK.sub("", joined)))
            item = None
        if paragraph:
            joined = " ".join(paragraph)
            add(joined, _slug(joined, 3) if section else _slug(joined))
            paragraph = []

    for line in body.split("\n"):
        h = _HEADING.match(line)
        it = _ITEM.match(line)
        if h:
            flush()
            section = h.group(2).strip()
        elif it:
            flush()
            item = [it.group(2)]
        elif not line.strip():
            flush()
        elif item is not None:
            item.append(line.strip())
        else:
            paragraph.append(line.strip())
    flush()
    return clauses


PREAMBLE = "The assistant in the conversation below holds to this manifesto.\n\n"


def manifesto_context(manifesto: Manifesto, base: Base) -> str:
    """The text the teacher sees: the manifesto, then its example exchanges written as the base formats a chat."""
    text = PREAMBLE + manifesto.body.strip() + "\n\n"
    if manifesto.examples:
        turns = []
        for ex in manifesto.examples:
            turns += [{"role": "user", "content": ex.user}, {"role": "assistant", "content": ex.assistant}]
        text += base.format_chat(turns, add_generation_prompt=False).rstrip("\n") + "\n\n"
    return text
