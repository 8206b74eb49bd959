"""Will vLLM, SGLang and LoRAX load this PEFT adapter unchanged? Their loaders' rules, read from their sources.

`check_adapter(config, tensor_names, family)` takes what `adapter_config.json` and `adapter_model.safetensors` hold and
answers per engine: whether it loads, the launch flags it needs (vLLM `--max-lora-rank 32` for r=32) and the problems
no flag fixes. `LoraWeights.to_peft` runs it on every export and refuses an adapter that no engine loads; the model card
(`credo.layers.card`) records what it said. The rules and their sources are listed in docs/serving.md; each rule below
names the file it comes from (vllm-project/vllm, sgl-project/sglang, predibase/lorax).

The families' module names come from `credo.families`, the one table of what differs between them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from credo.families import Family, family_of

Hard = Callable[..., None]  # hard(message, *engines): record a problem no flag fixes (no engines named: all of them)

ENGINES = ("vllm", "sglang", "lorax")
ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "lorax": "LoRAX"}


DORA = "DoRA (use_dora) is not plain LoRA"
BIAS = "it trains biases (bias is not 'none'), which are not served"

# vllm/config/lora.py: `MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]`, `max_lora_rank: MaxLoRARanks = 16`.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_MAX_LORA_RANK = 16
# vllm/model_executor/models/*.py: only LlamaForCausalLM declares `embedding_modules` (embed_tokens, lm_head); Gemma 2/3
# and Qwen 2 declare none, so vllm/lora/utils.py get_supported_lora_modules offers them no embedding LoRA.
VLLM_EMBEDDING_FAMILIES = frozenset({"llama"})
# server/lorax_server/models/__init__.py get_model: the model types LoRAX serves (others: "Unsupported model type").
LORAX_FAMILIES = frozenset({"llama", "qwen2", "gemma", "gemma2"})
# server/lorax_server/models/flash_{llama,qwen2}.py list LM_HEAD in ADAPTER_LAYERS; flash_gemma*.py leave it out (a TODO).
LORAX_LM_HEAD_FAMILIES = frozenset({"llama", "qwen2"})
LORAX_GRAPH_MAX_RANK = 64  # server/lorax_server/utils/graph.py: LORAX_COMPILE_MAX_RANK defaults to 64
LORAX_BGMV_MAX_RANK = 128  # server/lorax_server/utils/punica.py BGMV_MAX_RANK: above it decode takes the SGMV path

_TENSOR = re.compile(r"^base_model\.model\.(?P<module>.+?)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B"
                     r"|lora_magnitude_vector(?:\.weight)?|bias)$")
_DECODER = re.compile(r"^model\.layers\.(?P<layer>\d+)\.(?P<parent>self_attn|mlp)\.(?P<leaf>[A-Za-z0-9_]+)$")


@dataclass
class Verdict:
    """What one engine makes of the adapter."""

    engine: str
    flags: list[str] = field(default_factory=list)  # launch flags it needs to load the adapter
    problems: list[str] = field(default_factory=list)  # what no flag fixes: it refuses the adapter or serves it wrong
    notes: list[str] = field(default_factory=list)  # loads, but worth knowing (speed, later loading)

    @property
    def loads(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"loads": self.loads, "flags": self.flags, "problems": self.problems, "notes": self.notes}


@dataclass
class ServingReport:
    family: str  # '' when the base's family is unknown (its module names then go unchecked)
    rank: int
    verdicts: dict[str, Verdict]

    @property
    def loads_somewhere(self) -> bool:
        return any(v.loads for v in self.verdicts.values())

    def problem_line(self) -> str:
        """One line naming why no engine loads the adapter (the same problem is named once, with every engine it stops)."""
        by_problem: dict[str, list[str]] = {}
        for e in ENGINES:
            if self.verdicts[e].problems:
                by_problem.setdefault(self.verdicts[e].problems[0], []).append(ENGINE_NAMES[e])
        return "; ".join(f"{problem} ({', '.join(engines)})" for problem, engines in by_problem.items())

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "rank": self.rank, "engines": {e: v.to_json() for e, v in self.verdicts.items()}}


def check_adapter(config: Mapping[str, Any], tensor_names: Iterable[str], family: str = "", n_layers: int | None = None) -> ServingReport:
    """Judge a PEFT adapter (the parsed adapter_config.json and the tensor names of adapter_model.safetensors) for a base
    of `family` with `n_layers` decoder layers (when known: LoRAX drops a module type missing from any layer)."""
    fam = family_of(family) if family else None
    v = {e: Verdict(e) for e in ENGINES}

    def hard(message: str, *engines: str) -> None:
        for e in engines or ENGINES:
            if message not in v[e].problems:
                v[e].problems.append(message)

    r = _config_rules(config, hard)
    modules = _tensor_rules(tensor_names, hard)
    if fam is None:
        for e in ENGINES:
            v[e].notes.append(f"base family {family!r} is unknown to credo: module names not checked" if family else
                              "base family unknown: module names not checked")
    else:
        _family_rules(fam, modules, n_layers, hard)
    _rank_rules(r, v, hard)
    if isinstance(config.get("target_modules"), str):
        # sglang/srt/lora/lora_manager.py init_lora_shapes infers the served modules only from a list of names
        v["sglang"].flags.append("--lora-target-modules all")
    return ServingReport(family=fam.name if fam else "", rank=r, verdicts=v)


def _config_rules(config: Mapping[str, Any], hard: Hard) -> int:
    """Rules on adapter_config.json; returns the rank (0 when it has none that works)."""
    peft_type = config.get("peft_type", "LORA")
    peft_type = str(getattr(peft_type, "value", peft_type))  # peft's own dict holds a PeftType, a str enum
    if peft_type.upper() != "LORA":
        hard(f"peft_type is {peft_type!r}, not LORA")  # sglang/srt/lora/lora.py asserts peft_type == lora
    missing = [k for k in ("r", "lora_alpha", "target_modules") if k not in config]
    if missing:
        hard(f"adapter_config.json lacks {', '.join(missing)}")  # vllm/lora/peft_helper.py from_dict: required fields
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        hard(f"rank r={r!r} is not a positive whole number")  # vllm/lora/peft_helper.py __post_init__
        r = 0
    if config.get("use_dora"):
        # vllm/lora/peft_helper.py _validate_features; sglang/srt/lora/lora_manager.py validate_new_adapter; LoRAX reads
        # no DoRA setting (lorax_server/adapters/lora.py LoraConfig.load), so its magnitudes would go unused
        hard(DORA)
    if str(config.get("bias", "none")) != "none":
        # vllm/lora/peft_helper.py validate_legal: "Adapter bias is not supported."; SGLang and LoRAX add only B·A
        hard(BIAS)
    if config.get("modules_to_save"):
        hard("modules_to_save is set: whole trained modules are not served")  # vllm/lora/peft_helper.py _validate_features
    if config.get("fan_in_fan_out"):
        # LoRAX applies it only when merging (lorax_server/utils/adapter.py); vLLM's PEFTHelper and SGLang do not read it
        hard("fan_in_fan_out is set (weights stored transposed)")
    if config.get("use_rslora"):
        hard("rsLoRA scale (use_rslora) is not read", "sglang")  # sglang/srt/lora/lora.py: scaling = lora_alpha / r
    return int(r)


def _tensor_rules(tensor_names: Iterable[str], hard: Hard) -> dict[str, list[str]]:
    """Rules on the tensor names; returns module path -> the parts it has (lora_A.weight, ...)."""
    modules: dict[str, list[str]] = {}
    for name in tensor_names:
        m = _TENSOR.match(name)
        if m is None:
            # vllm/lora/utils.py parse_fine_tuned_lora_name raises on it; LoRAX looks up only base_model.model.X.lora_A.weight
            hard(f"tensor {name!r} is not a PEFT LoRA weight")
            continue
        part = m.group("part")
        if part.startswith("lora_magnitude_vector"):
            hard(DORA)
        elif part == "bias":
            hard(BIAS)
        modules.setdefault(m.group("module"), []).append(part)
    return modules


def _family_rules(fam: Family, modules: dict[str, list[str]], n_layers: int | None, hard: Hard) -> None:
    layers: dict[str, set[int]] = {}
    for path in modules:
        d = _DECODER.match(path)
        leaf = d.group("leaf") if d else path.rsplit(".", 1)[-1]
        if d and leaf in fam.projections and path == fam.module_path(int(d.group("layer")), leaf):
            layers.setdefault(leaf, set()).add(int(d.group("layer")))
        elif path in ("model.embed_tokens", "lm_head"):
            if fam.name not in VLLM_EMBEDDING_FAMILIES:
                hard(f"{leaf} is targeted: vLLM has no embedding LoRA for {fam.name}", "vllm")
            if leaf == "embed_tokens" or fam.name not in LORAX_LM_HEAD_FAMILIES:
                hard(f"{leaf} is targeted: LoRAX ignores it on {fam.name}", "lorax")
        else:
            # vllm/lora/lora_model.py check_unexpected_modules; sglang/srt/lora/utils.py get_normalized_target_modules
            # and the model's modules; LoRAX ignores weights outside its ADAPTER_LAYERS (models/model.py load_adapter)
            hard(f"module {path!r} is not one a {fam.name} model has ({', '.join(fam.projections)} under model.layers.N)")
    if fam.name not in LORAX_FAMILIES:
        hard(f"LoRAX serves no {fam.name} base", "lorax")  # lorax_server/models/__init__.py: "Unsupported model type"
    full = set(range(n_layers)) if n_layers else set(range(1 + max((i for s in layers.values() for i in s), default=-1)))
    partial: dict[str, list[str]] = {}
    for leaf, got in sorted(layers.items()):
        if got != full:  # lorax_server/adapters/lora.py LoraWeights.load returns None when any layer lacks the module
            partial.setdefault(_span(got), []).append(leaf)
    for span, leaves in partial.items():
        hard(f"{', '.join(leaves)} adapted in decoder layers {span} only of {_span(full)}: LoRAX drops a module missing "
             "from any layer", "lorax")
    for anchor, others in (("q_proj", ("k_proj", "v_proj")), ("v_proj", ("q_proj",)), ("gate_proj", ("up_proj",))):
        # sglang/srt/lora/lora.py normalize_qkv_proj / normalize_gate_up_proj stack q,k,v and gate,up starting from
        # q_proj (and need v_proj with it; k_proj may be missing) and from gate_proj (up_proj may be missing)
        for other in others:
            if layers.get(other, set()) - layers.get(anchor, set()):
                hard(f"{other} is adapted without {anchor} in the same layers: SGLang stacks them from {anchor}", "sglang")


def _rank_rules(r: int, v: dict[str, Verdict], hard: Hard) -> None:
    if r <= 0:
        return
    if r > VLLM_MAX_LORA_RANKS[-1]:
        hard(f"rank {r} is above vLLM's largest --max-lora-rank ({VLLM_MAX_LORA_RANKS[-1]})", "vllm")
    elif r > VLLM_DEFAULT_MAX_LORA_RANK:  # vllm/lora/peft_helper.py validate_legal: r > max_lora_rank is refused
        v["vllm"].flags.append(f"--max-lora-rank {vllm_max_lora_rank(r)}")
    # sglang/srt/lora/lora_manager.py init_lora_shapes takes the rank from the --lora-paths adapters when not given
    v["sglang"].notes.append(f"loaded after start-up (not in --lora-paths), it needs --max-lora-rank {r} or more")
    if r > LORAX_GRAPH_MAX_RANK:
        v["lorax"].notes.append(f"rank {r} runs without CUDA graphs unless launched with --compile --compile-max-rank "
                                f"{LORAX_BGMV_MAX_RANK if r <= LORAX_BGMV_MAX_RANK else 'N'} (lorax_server/utils/graph.py)"
                                + (" and decodes by the slower SGMV path (above 128)" if r > LORAX_BGMV_MAX_RANK else ""))


def vllm_max_lora_rank(r: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds rank r (16, its default, when r fits in it)."""
    return next((m for m in VLLM_MAX_LORA_RANKS if m >= max(r, VLLM_DEFAULT_MAX_LORA_RANK)), VLLM_MAX_LORA_RANKS[-1])


def _span(layers: set[int]) -> str:
    """Decoder layer numbers as compact ranges: {0, 1, 2, 5} -> '0-2, 5'."""
    out, run = [], []
    for i in sorted(layers):
        if run and i != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(i)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)
