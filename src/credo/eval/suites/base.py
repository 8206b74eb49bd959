"""What a suite is, the report columns it declares, and its registry (one file per suite in this folder, or a plug-in).

A suite reads and checks its data in `load` (before any model work), then `run` scores rows and returns metrics per
row name. Suites about identity (`per_manifesto`) run once per manifesto on the base, that manifesto's teacher and its
layers; the others run once on every row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from credo.plugins import Registry, package_modules

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


IDENTITY, SAFETY = "identity and capability", "safety, honesty and cost"  # the report's two tables


def dig(res: dict[str, Any], *path: str) -> Any:
    """`res[a][b]…`, or None where any step is missing."""
    for p in path:
        if not isinstance(res, dict) or p not in res:
            return None
        res = res[p]
    return res


def mean(values: list[Any]) -> float | None:
    """The mean of the figures that are numbers (a suite that did not run, or gave NaN, is left out); None if none."""
    vals = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


@dataclass
class Cells:
    """What a report column reads for one row: its results, the base's, the figures of the columns before it
    (`done`), and, for the base measured against several manifestos, each of those results."""

    res: dict[str, Any]
    base: dict[str, Any]
    done: dict[str, Any]
    by_manifesto: dict[str, Any] | None = None  # set only on the base row of a several-manifesto report

    def get(self, *path: str) -> Any:
        return dig(self.res, *path)

    def ratio(self, *path: str) -> float | None:
        """The row's figure over the base's (×)."""
        a, b = dig(self.res, *path), dig(self.base, *path)
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    def per_manifesto(self, *path: str) -> Any:
        """The figure; for a base measured against several manifestos, each one's, as 'a / b'."""
        if not self.by_manifesto:
            return self.get(*path)
        vals = [dig(v, *path) for v in self.by_manifesto.values()]
        return " / ".join("—" if x is None else f"{x:.2f}" for x in vals)


@dataclass(frozen=True)
class Column:
    """One column of the report's tables, declared by the suite that measures it."""

    key: str
    header: str
    value: Callable[[Cells], Any]
    pattern: str = "{:.2f}"
    table: str = IDENTITY
    order: int = 100  # left to right within its table


class Suite:
    """Base class: set `name`, `column` (the report's column group), `default_items`, and override load/run."""

    name: ClassVar[str] = ""
    column: ClassVar[str] = ""
    order: ClassVar[int] = 100  # when it runs and where its columns sit; credo's own take 10-170
    columns: ClassVar[tuple[Column, ...]] = ()  # what the report shows of its metrics
    per_manifesto: ClassVar[bool] = False
    row_by_row: ClassVar[bool] = True  # its rows may be scored one call each (a resumed run picks up after the last row)
    default_items: ClassVar[int] = 0
    help: ClassVar[str] = ""

    def __init__(self, ctx: SuiteContext):
        self.ctx = ctx

    def load(self, manifestos: list[Manifesto]) -> None:
        """Read and check every data file this suite will use."""

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        raise NotImplementedError


SUITES: Registry[type[Suite]] = Registry("suite", package_modules("credo.eval.suites"), known="suites")
register = SUITES.register  # `@register` on a Suite subclass with a `name`


def suite_names() -> list[str]:
    return SUITES.names()


def get_suite(name: str) -> type[Suite]:
    return SUITES.get(name)
