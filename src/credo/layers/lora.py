"""The LoRA payload shared by every kind that lives in low-rank weight deltas (`distill`, `hyper`).

One set of weights, three ways to use it:
- `applied(model)`: forward hooks add scale·B·A·x to each target module while active; the base weights are never touched.
- `adapter_config.json` + `adapter_model.safetensors` (`LoraWeights.to_peft` / `from_peft`): the PEFT format, so
  `peft.PeftModel.from_pretrained`, vLLM, SGLang and LoRAX load the folder unchanged; every export is first judged by
  `credo.layers.serving_check`, and one that no serving engine would load is refused before anything is written.
- `lora.gguf` (`LoraWeights.to_gguf` / `from_gguf`): a llama.cpp LoRA adapter (tensors `blk.N.attn_q.weight.lora_a` /
  `.lora_b`, `adapter.lora.alpha`). Engines load the file the payload wrote; none parses these files itself.

This module registers no kind itself: a kind subclasses `LoraLayer` and fills `weights` in `build`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from safetensors.torch import load_file

from credo.errors import LayerError, one_line
from credo.families import FAMILIES, adjacent_pairs
from credo.fsutil import gguf_written_atomically, save_tensors_atomic, write_text_atomic
from credo.layers.layer import Layer, LayerInfo
from credo.layers.serving_check import ServingReport, check_adapter

if TYPE_CHECKING:
    from credo.manifesto import Manifesto

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_GGUF = "lora.gguf"
PEFT_PREFIX = "base_model.model."
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Hugging Face model_type -> llama.cpp architecture name, for the GGUF export (from credo.families).
GGUF_ARCH = {t: f.gguf_arch for f in FAMILIES.values() for t in f.model_types}
REORDERED_ROPE = {f.gguf_arch for f in FAMILIES.values() if f.rope_adjacent_pairs}  # llama.cpp reorders their q/k rows
EXPORT_FACTS = ("n_layers", "head_dim")  # `export_facts`' keys, kept in layer.json params so a loaded layer exports alike
ROPE_HEAD_DIM_KEY = "credo.lora.rope_head_dim"  # set when q/k rows were reordered, so from_gguf can put them back
_ROTATED = re.compile(r"\.(q_proj|k_proj)$")
_KEY = re.compile(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraWeights:
    """A[module] is (r, in), B[module] is (out, r); the delta is (alpha / r) · B · A, as PEFT and llama.cpp define it.

    Module paths are in PEFT naming relative to the causal-LM model, e.g. `model.layers.0.self_attn.q_proj`.
    """

    r: int
    alpha: float
    a: dict[str, torch.Tensor]
    b: dict[str, torch.Tensor]
    arch: str = ""  # llama.cpp architecture name (e.g. gemma3); without one no lora.gguf can be written
    base_model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    GGUF_FILE: ClassVar[str] = LORA_GGUF  # its name in a layer folder (a stack's merged adapter too)

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    @property
    def modules(self) -> list[str]:
        return sorted(self.a)

    @property
    def target_modules(self) -> list[str]:
        return sorted({m.rsplit(".", 1)[-1] for m in self.a})

    @property
    def n_params(self) -> int:
        return sum(t.numel() for t in self.a.values()) + sum(t.numel() for t in self.b.values())

    @classmethod
    def init(cls, model: torch.nn.Module, r: int = 8, alpha: float | None = None, targets: tuple[str, ...] = DEFAULT_TARGETS,
             seed: int = 0, layers: list[int] | None = None) -> LoraWeights:
        """Fresh trainable weights: A small and random, B zero, so the adapter starts as the identity (as PEFT does)."""
        gen = torch.Generator().manual_seed(seed)
        a, b = {}, {}
        for path in target_paths(model, targets, layers):
            lin = model.get_submodule(path)
            a[path] = (torch.randn(r, lin.in_features, generator=gen) / lin.in_features**0.5).float()
            b[path] = torch.zeros(lin.out_features, r)
        return cls(r=r, alpha=float(alpha if alpha is not None else r), a=a, b=b, arch=gguf_arch(model), extra=export_facts(model))

    def parameters(self) -> list[torch.Tensor]:
        return [self.a[m] for m in self.modules] + [self.b[m] for m in self.modules]

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors in PEFT's key naming (what adapter_model.safetensors holds)."""
        out = {}
        for m in self.modules:
            out[f"{PEFT_PREFIX}{m}.lora_A.weight"] = self.a[m].detach().float().contiguous()
            out[f"{PEFT_PREFIX}{m}.lora_B.weight"] = self.b[m].detach().float().contiguous()
        return out

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], r: int, alpha: float, arch: str = "", base_model: str = "") -> LoraWeights:
        a, b = {}, {}
        for key, t in tensors.items():
            m = _KEY.match(key.removeprefix(PEFT_PREFIX))
            if not m:
                raise LayerError(f"adapter tensor {key!r} is not a LoRA A/B weight")
            (a if m.group(2) == "A" else b)[m.group(1)] = t.float()
        if set(a) != set(b):
            raise LayerError(f"adapter is corrupt: modules {sorted(set(a) ^ set(b))} lack an A or a B")
        for m in a:
            if a[m].shape[0] != r or b[m].shape[1] != r:
                raise LayerError(f"adapter is corrupt: {m} has rank {a[m].shape[0]}/{b[m].shape[1]}, config says {r}")
        return cls(r=r, alpha=alpha, a=a, b=b, arch=arch, base_model=base_model)

    def delta(self, module: str) -> torch.Tensor:
        """The dense weight delta (out, in) for one module: what merging would add to W."""
        return self.scale * self.b[module] @ self.a[module]

    # --- PEFT ---------------------------------------------------------------------------------------------------
    def peft_config(self) -> dict[str, Any]:
        """adapter_config.json's content, through peft's own LoraConfig, so the keys are the ones peft and the engines read."""
        from peft import LoraConfig

        config = LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            target_modules=self.target_modules,
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=self.base_model or None,
        )
        data = config.to_dict()
        for key, value in list(data.items()):  # sets are not JSON; peft writes them as lists too
            if isinstance(value, set):
                data[key] = sorted(value)
        return data

    def serving_report(self, config: dict[str, Any] | None = None) -> ServingReport:
        """What vLLM, SGLang and LoRAX make of this adapter as `to_peft` writes it (flags each needs, what none fixes)."""
        n_layers = self.extra.get("n_layers")
        return check_adapter(config if config is not None else self.peft_config(), self.state_names(), self.arch,
                             n_layers if isinstance(n_layers, int) else None)

    def state_names(self) -> list[str]:
        return [f"{PEFT_PREFIX}{m}.lora_{part}.weight" for m in self.modules for part in ("A", "B")]

    def to_peft(self, folder: Path) -> ServingReport:
        """Write the PEFT adapter, after the serving check: one that no serving engine would load is a one-line
        LayerError and nothing is written; problems for some engines only are returned (the model card shows them)."""
        data = self.peft_config()
        report = self.serving_report(data)
        if not report.loads_somewhere:
            raise LayerError(f"refusing to export a LoRA that no serving engine loads: {report.problem_line()} (docs/serving.md)")
        write_text_atomic(folder / ADAPTER_CONFIG, json.dumps(data, indent=2, sort_keys=True) + "\n")
        save_tensors_atomic(folder / ADAPTER_WEIGHTS, self.state(), metadata={"format": "pt"})
        return report

    @classmethod
    def from_peft(cls, folder: Path) -> LoraWeights:
        cfg_path, w_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
        if not cfg_path.is_file() or not w_path.is_file():
            raise LayerError(f"{folder} has no PEFT adapter ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            r = int(cfg["r"])
            alpha = float(cfg.get("lora_alpha", r))
            tensors = load_file(str(w_path))
        except Exception as e:  # bad JSON, a missing key, a truncated safetensors file
            raise LayerError(f"cannot read the PEFT adapter in {folder}: {one_line(e)}") from None
        if cfg.get("use_rslora"):
            alpha = alpha * r**0.5  # rsLoRA scales by alpha/sqrt(r); fold it into alpha so scale = alpha/r holds
        return cls.from_state(tensors, r=r, alpha=alpha, base_model=cfg.get("base_model_name_or_path") or "")

    # --- llama.cpp ----------------------------------------------------------------------------------------------
    def to_gguf(self, path: Path) -> None:
        """A llama.cpp LoRA adapter. Tensor names come from gguf's own HF -> GGUF map for the architecture."""
        import gguf

        if not self.arch:
            raise LayerError("cannot write lora.gguf: the base model's architecture has no llama.cpp name")
        arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.arch), None)
        if arch is None:
            raise LayerError(f"gguf does not know the architecture {self.arch!r}")
        n_blocks = 1 + max((int(m.group(1)) for p in self.modules if (m := re.search(r"\.layers\.(\d+)\.", p))), default=0)
        names = gguf.get_tensor_name_map(arch, n_blocks)
        head_dim = self._rope_head_dim()
        tensors = {}
        for m in self.modules:
            name = names.get_name(m)
            if name is None:
                raise LayerError(f"no llama.cpp tensor name for module {m}")
            b = adjacent_pairs(self.b[m].detach().float(), head_dim) if head_dim and _ROTATED.search(m) else self.b[m].detach().float()
            tensors[f"{name}.weight.lora_a"] = self.a[m].detach().float().contiguous().numpy()
            tensors[f"{name}.weight.lora_b"] = b.contiguous().numpy()
        with gguf_written_atomically(Path(path), self.arch) as writer:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(self.alpha))
            if head_dim:
                writer.add_uint32(ROPE_HEAD_DIM_KEY, head_dim)
            for name, t in tensors.items():
                writer.add_tensor(name, t)

    @classmethod
    def from_gguf(cls, path: Path) -> LoraWeights:
        """A llama.cpp LoRA adapter back in HF module naming (the attention and MLP projections)."""
        import gguf

        try:
            reader = gguf.GGUFReader(str(path))
            arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
            alpha = float(reader.fields[gguf.Keys.Adapter.LORA_ALPHA].parts[-1][0])
            head_dim = int(reader.fields[ROPE_HEAD_DIM_KEY].parts[-1][0]) if ROPE_HEAD_DIM_KEY in reader.fields else 0
            tensors = {t.name: torch.from_numpy(t.data.copy()).reshape([int(x) for x in reversed(t.shape)]) for t in reader.tensors}
        except Exception as e:  # gguf raises ValueError, KeyError, struct.error and more on a bad file
            raise LayerError(f"cannot read LoRA adapter {path}: {one_line(e)}") from None
        arch_id = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), None)
        blocks = [int(n.split(".")[1]) for n in tensors if re.match(r"^blk\.\d+\.", n)]
        if arch_id is None or not blocks:
            raise LayerError(f"{path} is not a LoRA adapter for a known architecture ({arch!r}, {len(blocks)} block tensors)")
        hf = _gguf_to_hf(arch_id, 1 + max(blocks))
        a, b = {}, {}
        for name, t in tensors.items():
            stem, _, part = name.rpartition(".weight.lora_")
            if stem not in hf or part not in ("a", "b"):
                raise LayerError(f"{path}: tensor {name!r} is not a LoRA A/B of a projection credo knows")
            (a if part == "a" else b)[hf[stem]] = t.float()
        if set(a) != set(b):
            raise LayerError(f"{path} is corrupt: modules {sorted(set(a) ^ set(b))} lack an A or a B")
        if head_dim:
            b = {m: adjacent_pairs(t, head_dim, back=True) if _ROTATED.search(m) else t for m, t in b.items()}
        return cls(r=next(iter(a.values())).shape[0], alpha=alpha, a=a, b=b, arch=arch, extra={"head_dim": head_dim} if head_dim else {})

    def _rope_head_dim(self) -> int:
        """The head size by which q_proj/k_proj rows are reordered for llama.cpp (0: this architecture needs none)."""
        if self.arch not in REORDERED_ROPE or not any(_ROTATED.search(m) for m in self.modules):
            return 0
        head_dim = self.extra.get("head_dim")
        if not isinstance(head_dim, int) or head_dim < 2:
            raise LayerError(f"cannot write lora.gguf for {self.arch}: its q/k rows need the head size, which this adapter does not record")
        return head_dim


def target_paths(model: torch.nn.Module, targets: tuple[str, ...] | list[str], layers: list[int] | None = None) -> list[str]:
    """Module paths of every nn.Linear whose last name is in `targets` (optionally only in decoder `layers`)."""
    paths = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets and name != "lm_head":
            if layers is not None:
                m = re.search(r"\.layers\.(\d+)\.", name)
                if not m or int(m.group(1)) not in layers:
                    continue
            paths.append(name)
    if not paths:
        raise LayerError(f"the model has no linear modules named {', '.join(targets)}")
    return paths


def gguf_arch(model: torch.nn.Module) -> str:
    return GGUF_ARCH.get(getattr(getattr(model, "config", None), "model_type", ""), "")


def export_facts(model: torch.nn.Module) -> dict[str, int]:
    """What an export needs to know of the model beyond the weights: its decoder layer count (LoRAX's rule) and head
    size (llama.cpp's Llama reorders q/k rows per head)."""
    config = getattr(model, "config", None)
    facts = {"n_layers": getattr(config, "num_hidden_layers", None)}
    heads = getattr(config, "num_attention_heads", None)
    facts["head_dim"] = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    return {k: v for k, v in facts.items() if isinstance(v, int)}


@contextlib.contextmanager
def lora_hooks(model: torch.nn.Module, weights: LoraWeights, scale: float = 1.0) -> Iterator[None]:
    """Add scale·(alpha/r)·B·A·x to each target module's output while active. Gradients flow to A and B if they want them."""
    handles = []
    s = weights.scale * scale
    try:
        for path in weights.modules:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                raise LayerError(f"the model has no module {path}; the adapter was made for another architecture") from None
            a, b = weights.a[path], weights.b[path]

            def hook(mod: torch.nn.Module, args: tuple, out: torch.Tensor, a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                x = args[0]
                return out + s * ((x.to(a.dtype) @ a.T) @ b.T).to(out.dtype)

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


def _gguf_to_hf(arch: Any, n_blocks: int) -> dict[str, str]:
    import gguf

    names = gguf.get_tensor_name_map(arch, n_blocks)
    out = {}
    for i in range(n_blocks):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            hf = f"model.layers.{i}.{part}"
            if (g := names.get_name(hf)) is not None:
                out[g] = hf
    return out


class LoraLayer(Layer):
    """A layer whose identity is a LoRA adapter. Subclasses register a kind and build `weights`; the rest is here."""

    def __init__(self, info: LayerInfo, manifesto: Manifesto, weights: LoraWeights):
        super().__init__(info, manifesto)
        self.weights = weights

    def payloads(self) -> list[object]:
        return [self.weights]

    def save_payload(self, folder: Path) -> None:
        self.weights.to_peft(folder)
        if self.weights.arch:
            self.weights.to_gguf(folder / LoraWeights.GGUF_FILE)

    @classmethod
    def load_payload(cls, folder: Path, info: LayerInfo, manifesto: Manifesto) -> LoraLayer:
        weights = LoraWeights.from_peft(folder)
        weights.arch = str(info.params.get("gguf_arch", ""))
        weights.extra.update({k: info.params[k] for k in EXPORT_FACTS if isinstance(info.params.get(k), int)})
        return cls(info, manifesto, weights)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        with lora_hooks(model, self.weights):
            yield

    @staticmethod
    def describe(weights: LoraWeights, info: LayerInfo) -> None:
        """Record what the adapter is in layer.json (rank, targets, size); `gguf_arch` lets load_payload write GGUF again."""
        info.params.update(
            r=weights.r, lora_alpha=weights.alpha, target_modules=weights.target_modules, lora_params=weights.n_params, gguf_arch=weights.arch
        )
        info.params.update({k: weights.extra[k] for k in EXPORT_FACTS if isinstance(weights.extra.get(k), int)})
