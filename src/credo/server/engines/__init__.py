"""Serving engines, one module each in this folder (or a plug-in), and the choice among them.

The request types and the protocol an engine implements are in `base`; `make_engine` picks one by name, or for `auto`
the first (by `order`) whose `suits(base)` says yes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from credo.plugins import Registry, package_modules
from credo.server.engines.base import Messages, PromptTooLong, RawText, Sampling, ServeEngine

if TYPE_CHECKING:
    from credo.base import Base

ENGINES: Registry[Any] = Registry("engine", package_modules("credo.server.engines"))
register = ENGINES.register  # `@register` on an engine class (see `base.ServeEngine`)


def engine_names() -> list[str]:
    return ENGINES.names()


def make_engine(choice: str, base: Base, n_ctx: int = 4096, threads: int | None = None) -> ServeEngine:
    """'auto': the first engine that suits the base (llama.cpp on a CPU when the base has a GGUF; else torch)."""
    if choice == "auto":
        choice = next(name for name in ENGINES.names() if ENGINES.get(name).suits(base))
    return ENGINES.get(choice).create(base, n_ctx=n_ctx, threads=threads)


__all__ = ["ENGINES", "Messages", "PromptTooLong", "RawText", "Sampling", "ServeEngine", "engine_names", "make_engine", "register"]
