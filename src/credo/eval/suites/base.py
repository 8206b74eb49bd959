"""What a suite is, and the one registry of suites.

A suite reads and checks its data in `load` (before any model work), then `run` scores rows and returns metrics per
row name. Suites about identity (`per_manifesto`) run once per manifesto on the base, that manifesto's teacher and its
layers; the others run once on every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from credo.errors import CredoError

if TYPE_CHECKING:
    from credo.eval.scorer import Row
    from credo.manifesto import Manifesto

Metrics = dict[str, Any]


@dataclass
class SuiteContext:
    """What every suite may read: the data folder, the item cap, the user's own files, whether to show progress."""

    data: Path
    limit: int | None = None
    user_files: list[Path] = field(default_factory=list)
    progress: bool = False
    size: int | None = None  # items per suite instead of each suite's small default (a fuller, slower run)
    realistic: dict[str, Path] = field(default_factory=dict)  # manifesto sha256 -> its realistic set (`credo.realistic`)

    def count(self, default: int) -> int:
        """Items per suite: --size or the suite's default, capped by --limit."""
        n = self.size or default
        return min(n, self.limit) if self.limit is not None else n


@dataclass
class Group:
    """One manifesto and the rows measured against it; greedy answers are memoised here for the suites that share them."""

    manifesto: Manifesto
    teacher: Row
    base: Row
    layers: list[Row]
    answers: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)

    @property
    def rows(self) -> list[Row]:
        return [self.base, self.teacher, *self.layers]

    def greedy(self, who: Row, prompt: str, max_tokens: int) -> list[int]:
        from credo.runtime.fidelity import teacher_answer

        key = (who.name, prompt, max_tokens)
        if key not in self.answers:
            self.answers[key] = teacher_answer(who.engine, prompt, max_tokens)
        return self.answers[key]


class Suite:
    """Base class: set `name`, `column` (the report's column group), `default_items`, and override load/run."""

    name: ClassVar[str] = ""
    column: ClassVar[str] = ""
    per_manifesto: ClassVar[bool] = False
    default_items: ClassVar[int] = 0
    help: ClassVar[str] = ""

    def __init__(self, ctx: SuiteContext):
        self.ctx = ctx

    def load(self, manifestos: list[Manifesto]) -> None:
        """Read and check every data file this suite will use."""

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        raise NotImplementedError


_SUITES: dict[str, type[Suite]] = {}


def register(cls: type[Suite]) -> type[Suite]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")
    _SUITES[cls.name] = cls
    return cls


def suite_names() -> list[str]:
    import credo.eval.suites  # noqa: F401  (imports every suite module, which registers it)

    return list(_SUITES)


def get_suite(name: str) -> type[Suite]:
    names = suite_names()
    if name not in _SUITES:
        raise CredoError(f"unknown suite {name!r}; known suites: {', '.join(names)}")
    return _SUITES[name]
