"""`sft` and `dpo`: the retraining baselines (TRL on a LoRA), with a budget, checkpoints, resume and clean settings."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from credo.errors import CredoError
from credo.layers import compile_layer, get_kind, load_layer, save_layer
from credo.layers.kinds.distill import Budget
from credo.runtime.torch_engine import TorchEngine

pytest.importorskip("trl")
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_cache")

FAST = dict(prompts="4", batch="2", answer_tokens="4", lr="1e-2", r="4", alpha="8", heldout="0", control="false", checkpoint_every="1", warmup="1",
            two_turn="0", facts="false")  # the plain prompts: counts below are of those
KINDS = ["sft", "dpo"]




def _retrain(kind, manifesto, base, budget, **settings):
    from credo.layers.registry import make_config

    cls = get_kind(kind)
    return cls.retrain(manifesto, base, make_config(cls, FAST | settings), budget, progress=False)


@pytest.mark.parametrize("bad, match", [({"steps": "3"}, "no setting 'steps'"), ({"budget": "0"}, "budget"), ({"budget": "0m"}, "budget"),
                                        ({"lr": "0"}, "lr"), ({"decay": "0"}, "decay"), ({"r": "0"}, "at least 1"), ({"batch": "x"}, "not a valid int"),
                                        ({"fact_weight": "0"}, "fact_weight")])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_settings_fail_in_one_line_before_any_work(kind, bad, match, tiny, pirate, tmp_path):
    with pytest.raises(CredoError, match=match) as err:
        compile_layer(pirate, tiny, kind, bad)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "work").exists()


def test_dpo_beta_must_be_positive(tiny, pirate, tmp_path):
    for beta in ("0", "-0.1"):
        with pytest.raises(CredoError, match="beta must be greater than 0"):
            compile_layer(pirate, tiny, "dpo", {"beta": beta})
    assert not (tmp_path / "cache" / "work").exists()
    assert get_kind("dpo").Config(beta=0.5).beta == 0.5


def test_without_trl_the_settings_say_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    from credo.layers.registry import make_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    for kind in KINDS:
        with pytest.raises(CredoError, match=r"pip install 'credo\[train\]'"):
            make_config(get_kind(kind), {})


def test_the_lora_is_distills():
    from credo.layers.kinds.distill import DistillConfig

    for kind in KINDS:
        config, distill = get_kind(kind).Config(), DistillConfig()
        assert (config.r, config.alpha, config.targets, config.lr, config.batch) == (distill.r, distill.alpha, distill.targets, distill.lr, distill.batch)


def test_trl_is_imported_only_when_a_retrain_kind_compiles():
    code = ("import sys; from credo.layers import kind_names, get_kind; from credo.layers.registry import make_config; kind_names(); "
            "make_config(get_kind('dpo'), {'beta': '0.2'}); import credo.cli; "
            "print(sorted(m for m in ('trl', 'datasets', 'transformers.trainer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("kind", KINDS)
def test_compile_save_load_and_peft_agree_and_the_base_is_untouched(kind, wide, pirate, tmp_path):
    import copy

    from peft import PeftModel

    ids = torch.tensor([wide.encode("Hello there", bos=True)])
    with torch.no_grad():
        before = wide.model(input_ids=ids).logits
    flags = [p.requires_grad for p in wide.model.parameters()]
    layer = compile_layer(pirate, wide, kind, FAST | {"budget": "3"})
    assert layer.info.report["steps"] == 3 and layer.info.report["stopped"] == "budget spent (3 steps)"
    assert layer.info.params["r"] == 4 and layer.info.params["target_modules"] == sorted(layer.info.params["targets"])
    with torch.no_grad():
        torch.testing.assert_close(wide.model(input_ids=ids).logits, before, atol=0, rtol=0)  # the base was never modified
    assert [p.requires_grad for p in wide.model.parameters()] == flags
    assert type(wide.model.model.layers[0].self_attn.q_proj) is torch.nn.Linear

    save_layer(layer, tmp_path / kind)
    assert {"adapter_config.json", "adapter_model.safetensors", "lora.gguf", "layer.json"} <= {p.name for p in (tmp_path / kind).iterdir()}
    back = load_layer(tmp_path / kind, wide)
    assert back.kind == kind
    prompt, answer = "Hello! Who are you?", "Arr matey"
    a = TorchEngine(wide, layer).answer_logits(prompt, answer)[0]
    b = TorchEngine(wide, back).answer_logits(prompt, answer)[0]
    bare = TorchEngine(wide).answer_logits(prompt, answer)[0]
    torch.testing.assert_close(a, b, atol=5e-4, rtol=1e-4)
    assert (a - bare).abs().max() > 1e-3  # the adapter moves the logits
    with torch.no_grad(), back.applied(wide.model):
        ours = wide.model(input_ids=ids).logits
    peft_model = PeftModel.from_pretrained(copy.deepcopy(wide.model), str(tmp_path / kind))
    with torch.no_grad():
        torch.testing.assert_close(ours, peft_model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_sft_learns_the_teachers_answers(wide, pirate):
    """The completion-only loss is the teacher answers' NLL under the student; training lowers it."""
    _, progress, figures = _retrain("sft", pirate, wide, Budget(steps=8))
    assert figures["train_examples"] == 4 and progress.step == 8 and len(progress.losses) == 8
    assert progress.losses[-1] < 0.8 * progress.losses[0]


def test_dpo_reference_is_the_bare_base_and_the_preference_grows(wide, pirate):
    """At step 0 the adapter is zero, so policy and reference agree and the loss is exactly ln 2; it falls from there."""
    _, progress, figures = _retrain("dpo", pirate, wide, Budget(steps=6))
    assert 1 <= figures["train_examples"] <= 4  # prompts both answer alike carry no preference and are left out
    assert progress.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert progress.losses[-1] < progress.losses[0] - 0.05


def test_a_budget_in_minutes_stops_training_and_says_so(wide, pirate):
    weights, progress, figures = _retrain("sft", pirate, wide, Budget(minutes=0.01))
    assert figures["stopped"] == "budget spent (0.01m)"
    assert progress.step >= 1 and figures["steps"] == progress.step


@pytest.mark.parametrize("kind", KINDS)
def test_resume_continues_from_the_checkpoint_and_equals_an_unbroken_run(kind, wide, pirate, tmp_path, monkeypatch):
    first, p1, _ = _retrain(kind, pirate, wide, Budget(steps=2), decay="1.0")  # constant lr: 2 steps then 4 is one 4-step run
    resumed, p2, fig = _retrain(kind, pirate, wide, Budget(steps=5), decay="1.0")
    assert fig["resumed_from_step"] == 2 and p2.step == 5 and p2.losses[:2] == p1.losses
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "fresh"))
    straight, p3, fig3 = _retrain(kind, pirate, wide, Budget(steps=5), decay="1.0")
    assert fig3["resumed_from_step"] == 0
    for m in straight.modules:
        torch.testing.assert_close(resumed.b[m], straight.b[m], atol=1e-5, rtol=1e-4)
    assert p3.losses == pytest.approx(p2.losses, rel=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_ctrl_c_keeps_the_steps_done_and_the_rerun_resumes(kind, wide, pirate, monkeypatch):
    from transformers import Trainer

    real, calls = Trainer.training_step, {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        _retrain(kind, pirate, wide, Budget(steps=5), checkpoint_every="100")  # no periodic checkpoint before the interrupt
    monkeypatch.setattr(Trainer, "training_step", real)
    _, progress, fig = _retrain(kind, pirate, wide, Budget(steps=5), checkpoint_every="100")
    assert fig["resumed_from_step"] == 3 and progress.step == 5


def test_positions_resume_where_an_unbroken_run_would_be():
    from itertools import islice

    from credo.layers.kinds.retrain import positions

    whole = list(islice(positions(0, 7, 3), 40))
    assert sorted(whole[:7]) == list(range(7)) and sorted(whole[7:14]) == list(range(7))  # every example once per epoch
    assert whole[:7] != whole[7:14]  # each epoch its own shuffle
    for start in (1, 6, 7, 15):
        assert list(islice(positions(start, 7, 3), 40 - start)) == whole[start:]


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_llamacpp_serves_the_lora_gguf_as_torch_does(kind, real_base, pirate, isolated_work, tmp_path):
    """A real compile (a few steps) writes a lora.gguf that llama.cpp loads on its Q4_K_M base and that shifts the
    logits as the torch adapter does."""
    import numpy as np

    llama_cpp = pytest.importorskip("llama_cpp")
    base = real_base
    settings = {"prompts": "8", "two_turn": "0", "facts": "false", "batch": "2", "answer_tokens": "8", "heldout": "0", "control": "false",
                "lr": "2e-3", "warmup": "1", "budget": "4"}
    layer = compile_layer(pirate, base, kind, settings)
    save_layer(layer, tmp_path / kind)
    ids = base.encode("User: Tell me about the sea.\nAssistant:", bos=True)
    with torch.no_grad():
        t0 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with layer.applied(base.model):
            t1 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()

    def run(lora: bool) -> np.ndarray:
        kw = {"lora_path": str(tmp_path / kind / "lora.gguf")} if lora else {}
        llm = llama_cpp.Llama(model_path=str(base.gguf), n_ctx=128, logits_all=True, verbose=False, **kw)
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    l0, l1 = run(False), run(True)
    assert np.abs(t1 - t0).max() > 1e-2
    assert np.corrcoef(t1 - t0, l1 - l0)[0, 1] > 0.9


def test_the_trl_distill_bench_trains_sdft_on_distills_lora(wide, pirate, tmp_path):
    """bench/trl_distill.py's SDFT run (TRL's self-distillation, the reference for `distill`) takes steps on a tiny
    model and returns a LoRA that moves the base: the bench cannot rot unseen between its rare full runs."""
    import importlib.util

    from credo.layers.kinds.retrain import RetrainConfig
    from credo.layers.lora import lora_hooks

    spec = importlib.util.spec_from_file_location("trl_distill_bench", Path(__file__).resolve().parent.parent / "bench" / "trl_distill.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = RetrainConfig(prompts=2, batch=2, answer_tokens=4, lr=1e-2, r=4, alpha=8, warmup=1)
    weights, progress = bench.sdft(pirate, wide, Budget(steps=2), ["Who are you?", "Tell me a joke."], config, tmp_path, progress=False)
    assert progress.step == 2 and len(progress.losses) == 2
    layer = bench.as_layer(pirate, wide, weights, "pirate-sdft")
    ids = torch.tensor([wide.encode("Who are you?", bos=True)])
    with torch.no_grad():
        plain = wide.model(input_ids=ids).logits
        with lora_hooks(wide.model, layer.weights):
            moved = wide.model(input_ids=ids).logits
    assert not torch.allclose(plain, moved)


@pytest.mark.parametrize("name, mixed", [("fp32", False), ("bf16", True)])
def test_retraining_trains_in_the_precision_credo_chose(name, mixed, tiny, tmp_path, monkeypatch):
    """sft and dpo follow credo.runtime.precision as distill does (TRL's bf16 autocast only where bf16 was chosen)."""
    from credo.layers.kinds.retrain import RetrainConfig, trl_arguments

    monkeypatch.setenv("CREDO_PRECISION", name)
    assert trl_arguments(RetrainConfig(), tiny, tmp_path, 1, False)["bf16"] is mixed
