"""`stack`: a second manifesto compiled on top of an existing layer, loading as one identity.

`credo compile extra.md --kind K --on DIR` loads the layer in DIR, compiles `extra.md` as kind K *with that layer
active* (the teacher is the lower identity with the new manifesto in context; the student the lower identity plus the
new layer), and writes one self-contained folder: `lower/` and `upper/` are complete layer folders, so the stack never
depends on DIR staying where it was. Stacks stack: `lower/` may itself be a stack.

At run time the contexts are concatenated (lower first) and both layers' forward-pass changes are active. For engines
that take one adapter, the stack also writes its merged form at the top: LoRAs concatenate along the rank (exact: the
sum of the deltas), control vectors add up (pre-scaled, `strength` 1).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from credo.errors import CredoError, LayerError
from credo.layers.control import ControlVector
from credo.layers.folder import load_layer, read_info, save_layer
from credo.layers.kinds.prompt import PromptLayer
from credo.layers.layer import Layer, LayerInfo
from credo.layers.lora import LoraLayer, LoraWeights
from credo.layers.registry import _stem, compile_layer, get_kind, make_config, register

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto
    from credo.runtime.prefix import PrefixState

LOWER, UPPER = "lower", "upper"


@register
class StackLayer(Layer):
    kind = "stack"
    listed = False  # not a kind to pass to --kind: a stack is made by `compile --on`

    @staticmethod
    def check_lower(lower_dir: str | Path) -> None:
        """A missing or corrupt lower layer folder fails here, before the model loads."""
        read_info(Path(lower_dir))

    @classmethod
    def build_over(cls, manifesto: Manifesto, base: Base, lower_dir: str | Path, kind: str, overrides: dict[str, Any] | None = None,
                   name: str | None = None) -> StackLayer:
        """`compile_layer(..., on=lower_dir)` comes here, through the registry."""
        return compile_on(manifesto, base, lower_dir, kind, overrides, name)

    def __init__(self, info: LayerInfo, manifesto: Manifesto, lower: Layer, upper: Layer):
        super().__init__(info, manifesto)
        self.lower, self.upper = lower, upper

    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: Any, info: LayerInfo) -> StackLayer:
        raise CredoError("a stack is compiled with `credo compile EXTRA.md --kind KIND --on LAYER_DIR`")

    def parts(self) -> list[Layer]:
        """The chain from the bottom up, stacks flattened."""
        return self.lower.parts() + self.upper.parts()

    def payloads(self) -> list[object]:
        return [p for part in self.parts() for p in part.payloads()]

    # --- run side -----------------------------------------------------------------------------------------------
    def context(self, base: Base) -> str:
        return self.lower.context(base) + self.upper.context(base)

    def prefix_state(self, base: Base) -> PrefixState | None:
        return self.lower.prefix_state(base) if not self.upper.context(base) else None

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        with self.lower.applied(model), self.upper.applied(model):
            yield

    # --- disk ---------------------------------------------------------------------------------------------------
    def save_payload(self, folder: Path) -> None:
        save_layer(self.lower, folder / LOWER)
        save_layer(self.upper, folder / UPPER)
        _write_merged(self.parts(), folder, self.info)

    @classmethod
    def load_payload(cls, folder: Path, info: LayerInfo, manifesto: Manifesto) -> StackLayer:
        for part in (LOWER, UPPER):
            if not (folder / part).is_dir():
                raise LayerError(f"stacked layer {folder} is corrupt: {part}/ is missing")
        return cls(info, manifesto, load_layer(folder / LOWER), load_layer(folder / UPPER))


def compile_on(manifesto: Manifesto, base: Base, lower_dir: str | Path, kind: str, overrides: dict[str, Any] | None = None,
               name: str | None = None) -> StackLayer:
    """Compile `manifesto` as `kind` on top of the layer in `lower_dir`; the result is one stacked layer."""
    import dataclasses

    lower = load_layer(lower_dir, base)
    cls = get_kind(kind)
    config = make_config(cls, overrides)
    start = time.perf_counter()
    upper_name = f"{_stem(manifesto)}-{kind}"
    if hasattr(cls, "build_on"):
        upper = compile_layer(manifesto, base, "prompt", name=upper_name)  # a shell for the info fields; rebuilt below
        info = dataclasses.replace(upper.info, kind=kind, params=dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {})
        upper = cls.build_on(manifesto, base, config, info, lower)
        upper.info.compile_seconds = round(time.perf_counter() - start, 3)
    elif cls is PromptLayer:
        upper = compile_layer(manifesto, base, kind, overrides, name=upper_name)  # a prompt needs nothing from below
    else:
        raise CredoError(f"kind {kind!r} cannot be stacked on another layer; use prompt, steer or distill")
    info = dataclasses.replace(
        upper.info,
        kind="stack",
        name=name or f"{lower.name}+{upper_name}",
        params={"lower": {"name": lower.name, "kind": lower.kind, "manifesto": lower.info.manifesto.get("name")}, "upper": {"kind": kind},
                "chain": [layer.kind for layer in lower.parts()] + [kind]},
        report=dict(upper.info.report),
        files={},
    )
    info.compile_seconds = round(time.perf_counter() - start, 3)
    return StackLayer(info, manifesto, lower, upper)


def merged_lora(parts: list[LoraWeights]) -> LoraWeights:
    """One LoRA equal to the sum of several: A stacked along the rank, B side by side with each part's scale folded in."""
    modules = sorted({m for w in parts for m in w.modules})
    a, b = {}, {}
    r = sum(w.r for w in parts)
    for m in modules:
        a_parts, b_parts = [], []
        for w in parts:
            if m in w.a:
                a_parts.append(w.a[m])
                b_parts.append(w.b[m] * w.scale)
            else:
                shape_a, shape_b = _shapes(parts, m)
                a_parts.append(torch.zeros(w.r, shape_a))
                b_parts.append(torch.zeros(shape_b, w.r))
        a[m], b[m] = torch.cat(a_parts, 0), torch.cat(b_parts, 1)
    return LoraWeights(r=r, alpha=float(r), a=a, b=b, arch=next((w.arch for w in parts if w.arch), ""), base_model=parts[0].base_model,
                       extra=next((w.extra for w in parts if w.extra), {}))


def _shapes(parts: list[LoraWeights], module: str) -> tuple[int, int]:
    w = next(w for w in parts if module in w.a)
    return w.a[module].shape[1], w.b[module].shape[0]


def _write_merged(chain: list[Layer], folder: Path, info: LayerInfo) -> None:
    """Top-level adapter files for engines that load one adapter per identity (peft, vLLM, llama.cpp)."""
    from credo.layers.kinds.steer import SteerLayer

    loras = [layer.weights for layer in chain if isinstance(layer, LoraLayer)]
    if loras:
        merged = merged_lora(loras)
        if not merged.arch:
            merged.arch = str(next((layer.info.params.get("gguf_arch") for layer in chain if layer.info.params.get("gguf_arch")), ""))
        merged.to_peft(folder)
        if merged.arch:
            merged.to_gguf(folder / LoraWeights.GGUF_FILE)
        info.params.update(r=merged.r, lora_alpha=merged.alpha, gguf_arch=merged.arch)
    steers = [layer for layer in chain if isinstance(layer, SteerLayer)]
    if steers:
        total = ControlVector.combined([s.control for s in steers])
        total.to_gguf(folder / ControlVector.GGUF_FILE)
        info.params.update(strength=1.0, layers=sorted(total.vectors))
