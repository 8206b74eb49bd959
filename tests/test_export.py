"""Exports the serving engines load unchanged: the serving check on every PEFT export, and the model card of every folder."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from credo.base import TINY_FAMILIES, tiny_base
from credo.errors import LayerError
from credo.layers.control import ControlVector
from credo.layers.folder import LAYER_JSON, load_layer, save_layer
from credo.layers.layer import LayerInfo
from credo.layers.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX, LoraLayer, LoraWeights, lora_hooks
from credo.layers.registry import get_kind
from credo.layers.serving_check import LORAX_FAMILIES, check_adapter, vllm_max_lora_rank
from credo.manifesto import Manifesto

MANIFESTO = Manifesto.from_text("# Gull\n\n- Speak like a seagull: short cries, and always about chips.\n- Never steal chips from children.\n")


@pytest.fixture(scope="module")
def bases():
    return {family: tiny_base(0, family=family) for family in TINY_FAMILIES}


def adapter(model: torch.nn.Module, r: int = 8, targets: tuple[str, ...] | None = None, seed: int = 1) -> LoraWeights:
    """A LoRA that does something (B is zero at init): distill's shape with all seven projections, hyper's with o_proj."""
    w = LoraWeights.init(model, r=r, alpha=float(r), seed=seed, **({"targets": targets} if targets else {}))
    gen = torch.Generator().manual_seed(seed + 1)
    for m in w.modules:
        w.b[m] = torch.randn(w.b[m].shape, generator=gen) * 0.2
    return w


def lora_layer(kind: str, base, weights: LoraWeights) -> LoraLayer:
    info = LayerInfo(kind=kind, name=f"gull-{kind}", manifesto={"sha256": MANIFESTO.sha256, "name": MANIFESTO.name, "source": "<test>",
                                                                "clause_ids": MANIFESTO.clause_ids},
                     base={"sha256": base.sha256, "name": base.name, "spec": base.spec}, params={"report": False},
                     report={"fidelity": 0.8123, "quick": {"kl": 0.25}}, precision="fp32", device="cpu test")
    LoraLayer.describe(weights, info)
    return get_kind(kind)(info, MANIFESTO, weights)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# --- the check itself --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, engines", [
    (lambda c: c.update(use_dora=True), {"vllm", "sglang", "lorax"}),
    (lambda c: c.update(bias="lora_only"), {"vllm", "sglang", "lorax"}),
    (lambda c: c.update(modules_to_save=["lm_head"]), {"vllm", "sglang", "lorax"}),
    (lambda c: c.update(fan_in_fan_out=True), {"vllm", "sglang", "lorax"}),
    (lambda c: c.update(peft_type="IA3"), {"vllm", "sglang", "lorax"}),
    (lambda c: c.pop("lora_alpha"), {"vllm", "sglang", "lorax"}),
    (lambda c: c.update(r=1024), {"vllm"}),
    (lambda c: c.update(use_rslora=True), {"sglang"}),
])
def test_each_rule_stops_the_engines_whose_loader_refuses_it(bases, change, engines):
    w = adapter(bases["llama"].model, r=8)
    config = w.peft_config()
    assert check_adapter(config, w.state_names(), "llama").loads_somewhere and all(v.loads for v in w.serving_report().verdicts.values())
    change(config)
    report = check_adapter(config, w.state_names(), "llama")
    assert {e for e, v in report.verdicts.items() if not v.loads} == engines
    assert report.loads_somewhere == (engines != {"vllm", "sglang", "lorax"})


def test_module_names_are_checked_against_the_family(bases):
    w = adapter(bases["llama"].model, r=8)
    names = w.state_names()
    assert check_adapter(w.peft_config(), names, "llama").loads_somewhere
    fused = [n.replace("self_attn.q_proj", "self_attn.qkv_proj") for n in names]  # vLLM's packed name, not the HF one
    assert not check_adapter(w.peft_config(), fused, "llama").loads_somewhere
    moved = [n.replace(".mlp.down_proj", ".self_attn.down_proj") for n in names]  # a real name under the wrong parent
    assert not check_adapter(w.peft_config(), moved, "llama").loads_somewhere
    assert not check_adapter(w.peft_config(), names + ["base_model.model.model.norm.weight"], "llama").loads_somewhere
    unknown = check_adapter(w.peft_config(), fused, "")  # a base of unknown family: names go unchecked, and it says so
    assert unknown.loads_somewhere and all("not checked" in v.notes[0] for v in unknown.verdicts.values())


def test_embedding_targets_follow_each_engine_and_family(bases):
    w = adapter(bases["llama"].model, r=8)
    head = w.state_names() + [f"{PEFT_PREFIX}lm_head.lora_A.weight", f"{PEFT_PREFIX}lm_head.lora_B.weight"]
    on = {family: {e for e, v in check_adapter(w.peft_config(), head, family).verdicts.items() if v.loads} for family in TINY_FAMILIES}
    assert on["llama"] == {"vllm", "sglang", "lorax"}  # LlamaForCausalLM declares embedding_modules; LoRAX lists LM_HEAD
    assert on["qwen2"] == {"sglang", "lorax"} and on["gemma2"] == {"sglang"} and on["gemma3"] == {"sglang"}
    embed = w.state_names() + [f"{PEFT_PREFIX}model.embed_tokens.lora_embedding_A", f"{PEFT_PREFIX}model.embed_tokens.lora_embedding_B"]
    assert {e for e, v in check_adapter(w.peft_config(), embed, "llama").verdicts.items() if v.loads} == {"vllm", "sglang"}


def test_partial_adapters_meet_lorax_and_sglang_rules(bases):
    model = bases["llama"].model
    some_layers = LoraWeights.init(model, r=8, targets=("o_proj",), layers=[1, 2])
    report = some_layers.serving_report()
    assert report.verdicts["vllm"].loads and report.verdicts["sglang"].loads and not report.verdicts["lorax"].loads
    assert "1-2 only of 0-3" in report.verdicts["lorax"].problems[0]
    last_only = LoraWeights.init(model, r=8, targets=("o_proj",), layers=[0, 1, 2])  # no gap, but the 4th layer is missing
    assert not last_only.serving_report().verdicts["lorax"].loads
    last_only.extra.clear()  # without the layer count only a gap or a late start shows
    assert last_only.serving_report().verdicts["lorax"].loads
    k_without_q = LoraWeights.init(model, r=8, targets=("k_proj", "v_proj", "o_proj"))
    assert not k_without_q.serving_report().verdicts["sglang"].loads and k_without_q.serving_report().verdicts["vllm"].loads


@pytest.mark.parametrize("r, flag", [(1, None), (8, None), (16, None), (17, 32), (32, 32), (100, 128), (300, 320), (512, 512)])
def test_vllm_rank_flag(bases, r, flag):
    w = LoraWeights.init(bases["llama"].model, r=r)
    vllm = w.serving_report().verdicts["vllm"]
    assert vllm.loads and vllm.flags == ([f"--max-lora-rank {flag}"] if flag else [])
    assert vllm_max_lora_rank(r) == (flag or 16)


# --- on export ----------------------------------------------------------------------------------------------------------
def test_an_adapter_no_engine_loads_is_refused_in_one_line_and_nothing_is_written(bases, tmp_path):
    w = adapter(bases["llama"].model, r=8)
    w.a["model.layers.0.self_attn.qkv_proj"] = w.a["model.layers.0.self_attn.q_proj"]  # a name no llama model has
    w.b["model.layers.0.self_attn.qkv_proj"] = w.b["model.layers.0.self_attn.q_proj"]
    with pytest.raises(LayerError, match="no serving engine loads") as e:
        w.to_peft(tmp_path)
    assert "\n" not in str(e.value) and "qkv_proj" in str(e.value) and "vLLM, SGLang, LoRAX" in str(e.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(LayerError, match="no serving engine loads"):
        save_layer(lora_layer("distill", bases["llama"], w), tmp_path / "gull")
    assert list(tmp_path.iterdir()) == []


def test_an_adapter_vllm_rejects_is_reported_and_still_exported_for_the_others(bases, tmp_path):
    base = bases["llama"]
    w = adapter(base.model, r=1024, targets=("o_proj",))  # above vLLM's largest --max-lora-rank (512)
    folder = save_layer(lora_layer("distill", base, w), tmp_path / "gull-distill")
    assert json.loads((folder / ADAPTER_CONFIG).read_text())["r"] == 1024
    card = (folder / "README.md").read_text()
    assert "rank 1024 is above vLLM's largest --max-lora-rank (512)" in card and "vllm serve" not in card
    assert "--lora-paths gull-distill=./gull-distill" in card and "lorax-launcher --model-id BASE" in card


def test_rank_32_exports_with_the_vllm_flag_in_its_card(bases, tmp_path):
    base = bases["qwen2"]
    w = adapter(base.model, r=32)
    assert w.to_peft(tmp_path / "raw").verdicts["vllm"].flags == ["--max-lora-rank 32"]
    folder = save_layer(lora_layer("distill", base, w), tmp_path / "gull-distill")
    card = (folder / "README.md").read_text()
    assert "vllm serve BASE --enable-lora --lora-modules gull-distill=./gull-distill --max-lora-rank 32" in card


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_distill_and_hyper_shaped_adapters_of_every_family_export_load_back_and_load_in_peft(bases, family, tmp_path):
    from peft import PeftModel

    base = bases[family]
    o_proj = base.model.model.layers[0].self_attn.o_proj
    shapes = {"distill": adapter(base.model, r=8), "hyper": adapter(base.model, r=min(o_proj.in_features, o_proj.out_features), targets=("o_proj",))}
    ids = torch.tensor([base.encode("User: chips?\nAssistant:", bos=True)])
    for kind, w in shapes.items():
        report = w.serving_report()
        assert report.family == family and report.verdicts["vllm"].loads and report.verdicts["sglang"].loads
        assert report.verdicts["lorax"].loads == (family in LORAX_FAMILIES)  # LoRAX has no Gemma 3 or Qwen 3 model
        if family not in LORAX_FAMILIES:
            assert report.verdicts["lorax"].problems == [f"LoRAX serves no {family} base"]
        folder = save_layer(lora_layer(kind, base, w), tmp_path / f"gull-{kind}")
        card = (folder / "README.md").read_text()
        assert card.startswith("---\nbase_model: ") and "library_name: peft" in card and f'- "{kind}"' in card
        for command in ("PeftModel.from_pretrained(model, \"./gull-", f"--lora-modules gull-{kind}=./gull-{kind}",
                        f"--lora-paths gull-{kind}=./gull-{kind}", f"--lora-scaled ./gull-{kind}/lora.gguf:0",
                        '"lora": [{"id": 0, "scale": 1}, {"id": 1, "scale": 0}]', "issue 28674", "| `fidelity` | 0.8123 |",
                        "| `quick.kl` | 0.25 |", "fp32", "cpu test", MANIFESTO.sha256, "Speak like a seagull"):
            assert command in card, (kind, command)
        assert "README.md" not in json.loads((folder / LAYER_JSON).read_text())["files"]
        back = load_layer(folder, base)
        assert back.weights.modules == w.modules and all(torch.equal(back.weights.b[m], w.b[m]) for m in w.modules)
        with lora_hooks(base.model, w):
            ours = logits(base.model, ids)
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(folder))
        theirs = logits(peft_model, ids)
        assert (ours - logits(base.model, ids)).abs().max() > 1e-3, "the adapter does nothing"
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_the_card_is_no_payload_loading_ignores_edits_to_it(bases, tmp_path):
    base = bases["gemma3"]
    folder = save_layer(lora_layer("hyper", base, adapter(base.model, r=4, targets=("o_proj",))), tmp_path / "gull-hyper")
    (folder / "README.md").write_text("# my own notes\n")
    load_layer(folder, base)
    (folder / "README.md").unlink()
    load_layer(folder, base)
    (folder / ADAPTER_WEIGHTS).write_bytes((folder / ADAPTER_WEIGHTS).read_bytes()[:-1])
    with pytest.raises(LayerError, match="corrupt"):
        load_layer(folder, base)


def test_kinds_without_a_lora_get_a_card_that_says_how_they_are_served(bases, tmp_path):
    from credo.layers.registry import compile_layer

    base = bases["gemma3"]
    prompt = save_layer(compile_layer(MANIFESTO, base, "prompt"), tmp_path / "gull-prompt")
    card = (prompt / "README.md").read_text()
    assert "library_name" not in card and "credo serve --base tiny:0 --layers-dir ." in card and "tiny-0@gull-prompt" in card
    assert "carries no weights" in card and "vllm" not in card.lower()
    load_layer(prompt, base)

    info = LayerInfo(kind="steer", name="gull-steer", manifesto={"sha256": MANIFESTO.sha256, "name": MANIFESTO.name},
                     base={"sha256": base.sha256, "name": base.name, "spec": base.spec}, params={"strength": 1.5, "layers": [2]})
    steer = get_kind("steer")(info, MANIFESTO, ControlVector({2: torch.ones(64)}, 1.5, "gemma3"))
    folder = save_layer(steer, tmp_path / "gull-steer")
    card = (folder / "README.md").read_text()
    assert "--control-vector-scaled control.gguf:1.5" in card and "library_name" not in card and "control-vector" in card
    assert load_layer(folder, base).strength == 1.5
