"""The model card: the README.md every saved layer folder gets, as Hugging Face users expect one.

It says what the layer is (base, manifesto, kind, the figures it recorded, the precision and device it was compiled
in) and how to serve it: credo serve, peft, vLLM, SGLang and LoRAX for a LoRA (with the flags and problems the serving
check found in the files just written), llama.cpp for `lora.gguf` and `control.gguf`. No loader reads it: a layer
folder's README.md is not listed in layer.json, so a user may edit it freely.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credo.layers.control import ControlVector
from credo.layers.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LoraWeights
from credo.layers.serving_check import ENGINE_NAMES, ENGINES, ServingReport, Verdict, check_adapter

if TYPE_CHECKING:
    from credo.layers.layer import Layer

CARD_FILE = "README.md"
MANIFESTO_LINES = 30  # the card quotes the manifesto's opening; manifesto.md holds all of it
MAX_FIGURES = 40  # a report's scalars beyond this are left to layer.json


def model_card(layer: Layer, folder: Path, name: str) -> str:
    """The card for `layer`, whose files are already in `folder`; `name` is the folder's final name (what commands use)."""
    info = layer.info
    report = _serving_report(layer, folder)
    control = (folder / ControlVector.GGUF_FILE).is_file()
    lora_gguf = (folder / LoraWeights.GGUF_FILE).is_file()
    tags = ["credo", "identity-layer", info.kind] + (["lora"] if report else []) + (["control-vector"] if control else [])
    front = [f"base_model: {json.dumps(info.base.get('name', ''))}"] + (["library_name: peft"] if report else [])
    front += ["tags:"] + [f"- {json.dumps(t)}" for t in tags]
    title = info.manifesto.get("name") or layer.manifesto.name
    out = ["---", *front, "---", "", f"# {name}: {title}", ""]
    out += [f"A credo identity layer of kind `{info.kind}` for the base `{info.base.get('name', '?')}`: the manifesto below, "
            "compiled into a swappable layer over the untouched base model. Made by credo; its record is `layer.json`.", ""]
    out += _about(layer, name)
    out += _manifesto(layer)
    out += _figures(info.to_json())
    base, spec = info.base.get("name", "BASE"), info.base.get("spec", "")
    out += ["## Serving it", "", "With credo itself (every kind), from the folder that holds this one:", "",
            "```sh", f"credo serve --base {spec or 'BASE'} --layers-dir .", f"# requests: \"model\": \"{base}@{name}\"", "```", ""]
    context_parts = [p.kind for p in layer.parts() if not p.payloads()]
    if context_parts and (report or control):
        out += [f"Part of this identity ({', '.join(context_parts)}) is text or saved state ahead of the conversation, which "
                "an engine that loads only the adapter or control vector below does not have: serve it with credo.", ""]
    if report:
        out += _lora_sections(report, name, base)
    if lora_gguf:
        out += _llamacpp_lora(name, float(info.params.get("lora_scale", 1.0)))
    elif report:
        out += ["No `lora.gguf` here: the base's architecture has no llama.cpp name, so llama.cpp cannot serve it.", ""]
    if control:
        out += _llamacpp_control(float(info.params.get("strength", 1.0)))
    if not report and not control:
        out += ["This kind carries no weights: its identity is the manifesto placed ahead of every conversation (a saved "
                "KV state of it for `cache`). Another engine serves it by putting that same text in front of the "
                "conversation (`credo.manifesto.manifesto_context`); credo serve does it for you.", ""]
    return "\n".join(out).rstrip() + "\n"


def serving_line(layer: Layer, folder: Path) -> str | None:
    """One line for the user who just saved `folder`: which engines load its adapter (with their flags), which refuse
    it and why (None for a layer without an adapter)."""
    report = _serving_report(layer, folder)
    if report is None:
        return None
    loads = [ENGINE_NAMES[e] + (f" ({' '.join(v.flags)})" if v.flags else "") for e, v in report.verdicts.items() if v.loads]
    refuses = [f"{ENGINE_NAMES[e]} ({v.problems[0]})" for e, v in report.verdicts.items() if not v.loads]
    return "  serving elsewhere: loads in " + (", ".join(loads) or "none") + ("; refused by " + "; ".join(refuses) if refuses else "") + \
        " (README.md in the folder has the commands)"


def _serving_report(layer: Layer, folder: Path) -> ServingReport | None:
    """The serving check on the adapter files as written (None without an adapter)."""
    from safetensors import safe_open

    cfg_path, w_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not (cfg_path.is_file() and w_path.is_file()):
        return None
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    with safe_open(str(w_path), framework="pt") as f:
        names = list(f.keys())
    loras = [p for p in layer.payloads() if isinstance(p, LoraWeights)]
    n_layers = next((w.extra["n_layers"] for w in loras if isinstance(w.extra.get("n_layers"), int)), None)
    arch = str(layer.info.params.get("gguf_arch") or next((w.arch for w in loras if w.arch), ""))
    return check_adapter(config, names, arch, n_layers)


def _about(layer: Layer, name: str) -> list[str]:
    info = layer.info
    rows = [("kind", f"`{info.kind}`" + (f" ({' over '.join(reversed([p.kind for p in layer.parts()]))})" if len(layer.parts()) > 1 else "")),
            ("base", f"`{info.base.get('name', '?')}` (SHA-256 of its weights `{info.base.get('sha256', '?')}`; loaded as "
                     f"`{info.base.get('spec', '?')}`)"),
            ("manifesto", f"{info.manifesto.get('name', '?')} (SHA-256 `{info.manifesto.get('sha256', '?')}`, "
                          f"{len(info.manifesto.get('clause_ids', []))} clauses; `manifesto.md`)"),
            ("compiled", f"{info.created or '?'} by credo {info.credo_version or '?'} in {_num(info.compile_seconds)} s"),
            ("precision", info.precision or "not recorded"), ("device", info.device or "not recorded")]
    out = ["| | |", "| --- | --- |"] + [f"| {k} | {_cell(v)} |" for k, v in rows] + [""]
    out += [f"A layer compiled for another base refuses to load (credo checks the hash). Folder name: `{name}`.", ""]
    return out


def _manifesto(layer: Layer) -> list[str]:
    lines = layer.manifesto.text.splitlines()
    fence = "`" * max(3, 1 + _longest_backticks(layer.manifesto.text))  # longer than any run inside: the quote cannot end early
    more = f" (the first {MANIFESTO_LINES} of {len(lines)} lines; all of it in `manifesto.md`)" if len(lines) > MANIFESTO_LINES else ""
    return ["## Manifesto" + more, "", fence + "markdown", *lines[:MANIFESTO_LINES], fence, ""]


def _longest_backticks(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def _figures(data: dict[str, Any]) -> list[str]:
    """The scalar figures the layer recorded at compile (its report, nested dicts flattened), as a table."""
    rows = [(k, v) for k, v in _flatten(data.get("report") or {}) if _scalar(v)]
    if not rows:
        return ["## Figures", "", "The compile recorded no figures (`credo eval` measures any layer).", ""]
    shown = rows[:MAX_FIGURES]
    out = ["## Figures", "", "Measured at compile time (`layer.json` `report`; fidelity = 1 − KL(teacher‖layer) / KL(teacher‖base), "
           "the teacher being the base with the manifesto in context):", "", "| figure | value |", "| --- | --- |"]
    out += [f"| `{k}` | {_cell(_num(v))} |" for k, v in shown]
    if len(rows) > len(shown):
        out.append(f"| … | {len(rows) - len(shown)} more in `layer.json` |")
    return out + [""]


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += _flatten(v, key + ".") if isinstance(v, dict) else [(key, v)]
    return out


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool) and (not isinstance(v, str) or len(v) <= 80)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _cell(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def _lora_sections(report: ServingReport, name: str, base: str) -> list[str]:
    out = ["### peft", "", "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
           f"model = AutoModelForCausalLM.from_pretrained(\"BASE\")  # the Hugging Face folder of {base}",
           f"model = PeftModel.from_pretrained(model, \"./{name}\")", "```", ""]
    out += ["### GPU serving engines", "",
            f"What credo's serving check (`credo.layers.serving_check`, rules in docs/serving.md) found in this adapter "
            f"(rank {report.rank}, family {report.family or 'unknown'}):", "",
            "| engine | loads unchanged | flags it needs | problems no flag fixes |", "| --- | --- | --- | --- |"]
    for e in ENGINES:
        v = report.verdicts[e]
        out.append(f"| {ENGINE_NAMES[e]} | {'yes' if v.loads else 'no'} | {_cell(' '.join(v.flags)) or '—'} | "
                   f"{_cell('; '.join(v.problems)) or '—'} |")
    out.append("")
    notes = [f"{ENGINE_NAMES[e]}: {n}" for e in ENGINES for n in report.verdicts[e].notes]
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    commands = {
        "vllm": ("vLLM", [f"vllm serve BASE --enable-lora --lora-modules {name}=./{name}" + _flags(report.verdicts["vllm"]),
                          f"# requests: \"model\": \"{name}\""]),
        "sglang": ("SGLang", [f"python -m sglang.launch_server --model-path BASE --enable-lora --lora-paths {name}=./{name}"
                              + _flags(report.verdicts["sglang"]),
                              f"# requests: \"lora_path\": \"{name}\""]),
        "lorax": ("LoRAX", ["lorax-launcher --model-id BASE" + _flags(report.verdicts["lorax"]),
                            f"# requests: \"parameters\": {{\"adapter_id\": \"/abs/path/to/{name}\", \"adapter_source\": \"local\"}}"]),
    }
    for e in ENGINES:
        title, lines = commands[e]
        v = report.verdicts[e]
        if v.loads:
            out += [f"#### {title}", "", "```sh", *lines, "```", ""]
        else:
            out += [f"#### {title}", "", f"Does not load here: {'; '.join(v.problems)}.", ""]
    out += ["BASE is the Hugging Face folder (or hub id) of the same weights as the base above; credo's own conversion of "
            "a GGUF base is under `~/.cache/credo/bases/`. See docs/serving.md for serving many layers at once.", ""]
    return out


def _flags(v: Verdict) -> str:
    return "".join(f" {f}" for f in v.flags)


def _llamacpp_lora(name: str, scale: float) -> list[str]:
    return ["### llama.cpp (`lora.gguf`)", "",
            "Load every adapter at scale 0 and choose per request; ids follow the order of `--lora-scaled` (GET "
            "/lora-adapters lists them):", "",
            "```sh", f"llama-server -m BASE.gguf --lora-scaled ./{name}/lora.gguf:0 --lora-scaled ./other/lora.gguf:0",
            "```", "",
            f"A request for this identity names every loaded adapter with an explicit scale ({_num(scale)} for this one, 0 "
            "for the others): `\"lora\": [{\"id\": 0, \"scale\": " + _num(scale) + "}, {\"id\": 1, \"scale\": 0}]`. An empty "
            "`lora` list does not set the others to 0 (llama.cpp issue 28674). BASE.gguf is the same weights as the base "
            "above, in GGUF.", ""]


def _llamacpp_control(strength: float) -> list[str]:
    return ["### llama.cpp (`control.gguf`)", "",
            "```sh", f"llama-server -m BASE.gguf --control-vector-scaled control.gguf:{_num(strength)}", "```", "",
            "The control vector holds the unscaled directions; the strength is given at load time and applies to every "
            "request that server answers (one identity per server; credo serve switches them per request).", ""]
