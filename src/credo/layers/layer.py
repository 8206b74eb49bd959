"""What every kind of identity layer is: metadata that describes it, a payload, and three ways to act on a run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto
    from credo.runtime.prefix import PrefixState


@dataclass
class LayerInfo:
    """The contents of `layer.json`: enough to know what a layer is without loading its payload."""

    kind: str
    name: str
    manifesto: dict[str, Any]  # sha256, name, source, clause_ids
    base: dict[str, Any]  # sha256, name, spec
    params: dict[str, Any] = field(default_factory=dict)
    compile_seconds: float = 0.0  # wall seconds of the whole compile, its compile-time report included
    compile_cpu_seconds: float = 0.0  # this process's CPU seconds for the same: on a shared machine the wall clock overstates
    created: str = ""
    credo_version: str = ""
    files: dict[str, str] = field(default_factory=dict)  # path in folder -> sha256
    report: dict[str, Any] = field(default_factory=dict)  # figures measured at compile time (fidelity, ...)
    precision: str = ""  # what the compile ran in (fp32, bf16: `credo.runtime.precision`); empty for layers compiled before credo recorded it
    device: str = ""  # where: 'cpu' and torch's CPU capability (with the CPU's bf16 flags), or 'cuda' and the GPU's name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class Layer:
    """A compiled identity. Subclasses set `kind`, `Config`, and override what they change about a run.

    A layer acts on a run in up to three ways: text it puts ahead of the conversation (`context`), a saved KV state
    for that text (`prefix_state`), and changes to the forward pass while it is active (`applied`).
    """

    kind: ClassVar[str] = ""
    order: ClassVar[int] = 100  # where `credo compile --help` and the demo list the kind; credo's own take 10-70
    Config: ClassVar[type] = dict
    demo_settings: ClassVar[dict[str, str]] = {}  # what `credo demo` compiles with (e.g. a shorter budget)
    resolved_settings: ClassVar[tuple[str, ...]] = ()  # settings `build` records as it chose them, not as they were asked

    def __init__(self, info: LayerInfo, manifesto: Manifesto):
        self.info = info
        self.manifesto = manifesto

    # --- compile side -------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: Any, info: LayerInfo) -> Layer:
        """Compile `manifesto` on `base`; `info` is filled in by the caller with everything but the payload. A kind that
        can be stacked defines `build_on(manifesto, base, config, info, lower)` instead, and this calls it on no lower."""
        build_on = getattr(cls, "build_on", None)
        if build_on is None:
            raise NotImplementedError(f"kind {cls.kind!r} defines neither build nor build_on")
        return build_on(manifesto, base, config, info, None)

    def save_payload(self, folder: Path) -> None:
        """Write the payload files (safetensors, configs) into `folder`; layer.json is written by the caller."""

    @classmethod
    def load_payload(cls, folder: Path, info: LayerInfo, manifesto: Manifesto) -> Layer:
        return cls(info, manifesto)

    # --- run side -----------------------------------------------------------------------------------------------
    def context(self, base: Base) -> str:
        """Text placed ahead of the conversation on every request ('' when the layer lives in the weights)."""
        return ""

    def prefix_state(self, base: Base) -> PrefixState | None:
        """A saved KV state of `context` that stands in for its prefill, if the layer keeps one."""
        return None

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        """Changes to the forward pass (hooks, adapters) while the block runs; the base weights stay untouched."""
        yield

    def parts(self) -> list[Layer]:
        """The layers this one is made of, lowest first (a stack: its parts; any other: itself)."""
        return [self]

    def payloads(self) -> list[object]:
        """The payload objects that carry this layer's change to the forward pass (`LoraWeights`, `ControlVector`), so
        an engine can load them in its own form; empty when the change, if any, lives only in `applied`."""
        return []

    @property
    def name(self) -> str:
        return self.info.name
