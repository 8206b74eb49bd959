"""The one registry of layer kinds. A new kind is one new module in `credo/layers/kinds/` with `@register` on its class."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credo import __version__
from credo.errors import CredoError, UnknownKindError
from credo.layers.layer import LayerInfo
from credo.plugins import Registry, package_modules

if TYPE_CHECKING:
    from credo.base import Base
    from credo.layers.layer import Layer
    from credo.manifesto import Manifesto

KINDS: Registry[type[Layer]] = Registry("layer kind", package_modules("credo.layers.kinds"), name_of=lambda cls: cls.kind,
                                      error=UnknownKindError, known="kinds")
register = KINDS.register  # `@register` on a Layer subclass with a `kind` (and an `order` to place it in listings)


def kind_names() -> list[str]:
    """The listed kinds, in the order the project presents them (`stack` loads by name but is made with --on)."""
    return KINDS.names()


def get_kind(name: str) -> type[Layer]:
    return KINDS.get(name)


def make_config(cls: type[Layer], overrides: dict[str, Any] | None) -> Any:
    """Build the kind's config dataclass from `key=value` overrides, converting strings to each field's type."""
    overrides = dict(overrides or {})
    if not dataclasses.is_dataclass(cls.Config):
        if overrides:
            raise CredoError(f"kind {cls.kind!r} takes no settings (got {', '.join(overrides)})")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key == "bf16" and key not in fields:  # an old setting of distill and hyper
            raise CredoError("the bf16 setting is gone: one precision serves every kind (--precision auto|fp32|bf16, or CREDO_PRECISION)")
        if key not in fields:
            raise CredoError(f"kind {cls.kind!r} has no setting {key!r}; it has: {', '.join(fields) or 'none'}")
        values[key] = _convert(raw, fields[key], cls.kind)
    return cls.Config(**values)


def _convert(raw: Any, f: dataclasses.Field, kind: str) -> Any:
    if not isinstance(raw, str):
        return raw
    typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if typ.startswith("bool"):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if typ.startswith("int"):
            return int(raw)
        if typ.startswith("float"):
            return float(raw)
        if typ.startswith(("list", "tuple")):
            items = [x.strip() for x in raw.split(",") if x.strip()]
            inner = typ[typ.find("[") + 1 : typ.rfind("]")] if "[" in typ else "str"
            return [int(x) for x in items] if inner.startswith("int") else [float(x) for x in items] if inner.startswith("float") else items
    except ValueError:
        raise CredoError(f"kind {kind!r}: setting {f.name}={raw!r} is not a valid {typ}") from None
    return raw


def check_compile(kind: str, overrides: dict[str, Any] | None = None, on: str | Path | None = None) -> None:
    """What a compile can refuse before any model loads (an unknown kind, a bad setting, a missing or corrupt lower
    layer), so every caller fails in a second rather than after the base has loaded."""
    make_config(get_kind(kind), overrides)
    if on is not None:
        get_kind("stack").check_lower(on)


def compile_layer(manifesto: Manifesto, base: Base, kind: str, overrides: dict[str, Any] | None = None, name: str | None = None,
                  on: str | Path | None = None) -> Layer:
    """The one verb: manifesto + base + kind -> Layer (in memory; `save_layer` writes it). With `on`, the layer is
    compiled on top of the one in that folder, and the two load as one `stack` layer."""
    if on is not None:
        return get_kind("stack").build_over(manifesto, base, on, kind, overrides, name)
    from credo.runtime.precision import of

    cls = get_kind(kind)
    config = make_config(cls, overrides)
    precision = of(base)
    info = LayerInfo(
        kind=kind,
        name=name or f"{_stem(manifesto)}-{kind}",
        manifesto={"sha256": manifesto.sha256, "name": manifesto.name, "source": manifesto.source, "clause_ids": manifesto.clause_ids},
        base={"sha256": base.sha256, "name": base.name, "spec": base.spec},
        params=dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        credo_version=__version__,
        precision=precision.name,
        device=precision.where,
    )
    start, cpu = time.perf_counter(), time.process_time()
    layer = cls.build(manifesto, base, config, info)
    layer.info.compile_seconds = round(time.perf_counter() - start, 3)
    layer.info.compile_cpu_seconds = round(time.process_time() - cpu, 3)
    return layer


def _stem(manifesto: Manifesto) -> str:
    stem = Path(manifesto.source).stem if manifesto.source and not manifesto.source.startswith("<") else manifesto.name
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in stem.lower()).strip("-") or "manifesto"


def teacher_layer(manifesto: Manifesto, base: Base) -> Layer:
    """The teacher as a layer (the `prompt` kind), for the places that list it among the rows they score."""
    return compile_layer(manifesto, base, "prompt", name="teacher")
