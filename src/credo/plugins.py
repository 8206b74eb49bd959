"""The one way to plug things into credo: layer kinds, eval suites, serving engines and command groups are each a
`Registry`, and a plug-in is a module whose classes register themselves with that registry's decorator on import.

A registry finds its modules three ways: credo's own, one file each in the registry's package folder; every module
named by an installed package's entry points in the `credo` group (as simonw/llm and pytest find theirs); and the
modules listed in `$CREDO_PLUGINS` (comma-separated), for a plug-in file not packaged yet. So a new kind, suite or
engine is one new file, and nothing else changes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from credo.errors import CredoError

ENTRY_POINT_GROUP = "credo"  # [project.entry-points.credo] my_plugin = "my_package.credo_plugin"
ENV = "CREDO_PLUGINS"  # module names, comma-separated, imported as plug-ins

T = TypeVar("T")


@functools.cache
def _entry_point_modules() -> tuple[str, ...]:
    """Installed packages do not change while credo runs: their entry points are read once (a scan of every
    distribution's metadata, milliseconds each time)."""
    from importlib.metadata import entry_points

    return tuple(ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP))


def outside_modules() -> list[str]:
    """The plug-in modules from outside credo: entry points first, then $CREDO_PLUGINS."""
    return [*_entry_point_modules(), *(m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip())]


def load_outside() -> None:
    """Import every outside plug-in module (once: Python keeps what it imported); one that fails to import is a
    one-line error that names it."""
    for name in outside_modules():
        try:
            importlib.import_module(name)
        except Exception as e:  # a plug-in's own failure, whatever it is, is reported as the plug-in's
            raise CredoError(f"plug-in module {name!r} failed to load: {type(e).__name__}: {e}") from None


def package_modules(package: str) -> Callable[[], list[str]]:
    """credo's own modules of one sort: every module in `package` whose name does not start with '_'."""
    def find() -> list[str]:
        pkg = importlib.import_module(package)
        return [f"{package}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]

    return find


class Registry(Generic[T]):
    """Named plug-ins of one sort. Each one has a name (`name_of`) and may set `order` (lower comes first; 100 by
    default) and `listed = False` (loadable by name, left out of `names()`)."""

    def __init__(self, sort: str, find: Callable[[], Iterable[str]], name_of: Callable[[T], str] = lambda obj: obj.name,
                 error: type[CredoError] = CredoError, known: str = ""):
        self.sort, self._find, self._name_of, self._error = sort, find, name_of, error
        self._known = known or f"{sort}s"
        self._items: dict[str, T] = {}
        self._found = False

    def register(self, obj: T) -> T:
        name = self._name_of(obj)
        if not name:
            raise TypeError(f"{obj!r} needs a name to be registered as a {self.sort}")
        self._items[name] = obj
        return obj

    def _discover(self) -> None:
        if not self._found:
            self._found = True  # before importing: a module may ask for names while it loads
            for module in self._find():
                importlib.import_module(module)
        load_outside()

    def names(self) -> list[str]:
        """The listed plug-ins, in the order they present themselves (`order`, then name)."""
        self._discover()
        listed = [(getattr(obj, "order", 100), name) for name, obj in self._items.items() if getattr(obj, "listed", True)]
        return [name for _, name in sorted(listed)]

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._items:
            raise self._error(f"unknown {self.sort} {name!r}; known {self._known}: {', '.join(self.names())}")
        return self._items[name]


def cli_modules() -> list[str]:
    """credo's own command groups: the `cli` module of each subpackage (eval, server, data)."""
    import credo

    return [f"credo.{m.name}.cli" for m in pkgutil.iter_modules(credo.__path__)
            if m.ispkg and importlib.util.find_spec(f"credo.{m.name}.cli") is not None]


# Command groups: a function that adds its commands to the `credo` typer app. Named by its module's package.
commands: Registry[Callable] = Registry("command group", cli_modules, name_of=lambda fn: f"{fn.__module__}.{fn.__name__}")
