"""The steering payload: one direction per decoder layer and the strength to add it with, and its two files.

- `steer.safetensors`: the unscaled vectors (`layer.N`), with the strength in the metadata; what credo loads back.
- `control.gguf`: a llama.cpp control vector (architecture `controlvector`, `direction.N` added to the output of block
  N, 1-based as llama.cpp counts). llama.cpp takes the strength at load time (`--control-vector-scaled FILE:STRENGTH`),
  so the GGUF holds the unscaled vectors and no strength.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from credo.errors import LayerError, one_line
from credo.fsutil import gguf_written_atomically, save_tensors_atomic

SAFETENSORS_FORMAT = "credo-steer-v1"


@dataclass
class ControlVector:
    """Adding strength·vectors[N] to the residual stream after decoder layer N is the whole effect."""

    vectors: dict[int, torch.Tensor]  # decoder layer -> unscaled direction of hidden_size floats
    strength: float = 1.0
    model_hint: str = "gemma3"  # llama.cpp architecture name recorded in the GGUF; llama.cpp does not check it
    GGUF_FILE: ClassVar[str] = "control.gguf"  # its name in a layer folder
    SAFETENSORS_FILE: ClassVar[str] = "steer.safetensors"

    def scaled(self) -> dict[int, torch.Tensor]:
        return {layer: self.strength * v for layer, v in self.vectors.items()}

    @classmethod
    def combined(cls, parts: list[ControlVector]) -> ControlVector:
        """One vector with the effect of several applied together: their scaled sum, at strength 1 (what a stack serves)."""
        if not parts:
            raise LayerError("no control vectors to combine")
        total: dict[int, torch.Tensor] = {}
        for part in parts:
            for layer, v in part.vectors.items():
                total[layer] = total.get(layer, torch.zeros_like(v)) + part.strength * v
        return cls(total, 1.0, parts[0].model_hint)

    # --- safetensors --------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        save_tensors_atomic(Path(path), {f"layer.{i}": v.detach().float().contiguous() for i, v in self.vectors.items()},
                            metadata={"format": SAFETENSORS_FORMAT, "strength": repr(self.strength)})

    @classmethod
    def load(cls, path: Path, model_hint: str = "gemma3") -> ControlVector:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                vectors = {_layer_index(k, "layer.", path): f.get_tensor(k) for k in f.keys()}
            strength = float(meta.get("strength", "1.0"))
        except LayerError:
            raise
        except Exception as e:  # safetensors raises its own error types, OSError and ValueError on a bad file
            raise LayerError(f"cannot read steering vectors {path}: {one_line(e)}") from None
        return cls(vectors, strength, model_hint)

    # --- llama.cpp ----------------------------------------------------------------------------------------------
    def to_gguf(self, path: Path) -> None:
        """The unscaled vectors as a llama.cpp control vector; load it with the strength (`--control-vector-scaled`)."""
        if any(i < 1 for i in self.vectors):
            raise LayerError("llama.cpp control vectors cannot steer layer 0")
        with gguf_written_atomically(Path(path), "controlvector") as writer:
            writer.add_string("controlvector.model_hint", self.model_hint)
            writer.add_uint32("controlvector.layer_count", len(self.vectors))
            for i in sorted(self.vectors):
                writer.add_tensor(f"direction.{i}", self.vectors[i].detach().float().contiguous().numpy())

    @classmethod
    def from_gguf(cls, path: Path, strength: float = 1.0) -> ControlVector:
        """The GGUF holds no strength: pass the one it is served with."""
        import gguf

        try:
            reader = gguf.GGUFReader(str(path))
            arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
            hint_field = reader.fields.get("controlvector.model_hint")
            hint = bytes(hint_field.parts[-1]).decode() if hint_field else ""
            tensors = [(t.name, t.data) for t in reader.tensors]
        except Exception as e:  # gguf raises ValueError, KeyError, struct.error and more on a bad file
            raise LayerError(f"cannot read control vector {path}: {one_line(e)}") from None
        if arch != "controlvector":
            raise LayerError(f"{path} is not a control vector (its architecture is {arch!r})")
        vectors = {_layer_index(name, "direction.", path): torch.from_numpy(data.copy()).reshape(-1)
                   for name, data in tensors if name.startswith("direction.")}
        if not vectors or min(vectors) < 1:
            raise LayerError(f"control vector {path} has no direction.N tensors for layers 1 and up")
        return cls(vectors, strength, hint)


def _layer_index(name: str, prefix: str, path: Path) -> int:
    index = name.removeprefix(prefix)
    if not name.startswith(prefix) or not index.isdigit():
        raise LayerError(f"{path} is corrupt: tensor {name!r} is not {prefix}N")
    return int(index)
