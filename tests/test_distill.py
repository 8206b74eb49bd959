"""`distill`: context distillation into a LoRA, with a budget, checkpoints and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from credo.errors import CredoError
from credo.layers import compile_layer, load_layer, save_layer
from credo.layers.kinds.distill import Budget, DistillConfig, distill, mean_kl, training_prompts
from credo.manifesto import Manifesto
from credo.runtime.torch_engine import TorchEngine

pytestmark = pytest.mark.usefixtures("fresh_cache")

FAST = dict(prompts=4, batch=2, answer_tokens=4, topk=8, lr=1e-2, r=4, alpha=8.0, heldout=0, control=False, checkpoint_every=1, warmup=1,
            two_turn=0, facts=False)  # the plain prompts: counts below are of those




def test_budget_parses_minutes_and_steps():
    assert Budget.parse("10m") == Budget(minutes=10.0) and Budget.parse("200") == Budget(steps=200)
    assert Budget.parse("1.5min").minutes == 1.5
    for bad in ("", "0", "-3", "ten", "5h"):
        with pytest.raises(CredoError, match="budget"):
            Budget.parse(bad)


def test_training_never_sees_heldout_prompts(pirate):
    from credo.probes import heldout_prompts

    assert not set(training_prompts(pirate)) & set(heldout_prompts(pirate))


def test_training_lowers_the_kl(wide, pirate):
    from credo.runtime.teacher import load_answers

    weights, progress, figures = distill(pirate, wide, DistillConfig(**FAST), Budget(steps=6), progress=False)
    assert progress.step == 6 and len(progress.losses) == 6
    cached = load_answers(Path(figures["work"]) / "answers.safetensors")
    prompts = training_prompts(pirate, 4)
    answers = [cached[p] for p in prompts]
    before, after = mean_kl(wide, None, prompts, answers), mean_kl(wide, weights, prompts, answers)
    assert after < 0.9 * before


def test_resume_continues_from_the_checkpoint(tiny, pirate, tmp_path, monkeypatch):
    config = DistillConfig(**FAST | {"decay": 1.0})  # a constant lr: a 2-step budget then a 4-step one is one 4-step run
    first, p1, _ = distill(pirate, tiny, config, Budget(steps=2), progress=False)
    assert p1.step == 2
    resumed, p2, fig = distill(pirate, tiny, config, Budget(steps=4), progress=False)  # the same compile, more budget
    assert fig["resumed_from_step"] == 2 and p2.step == 4 and p2.losses[:2] == p1.losses
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "fresh"))
    straight, p3, fig3 = distill(pirate, tiny, config, Budget(steps=4), progress=False)
    assert fig3["resumed_from_step"] == 0
    for m in straight.modules:  # interrupted-and-resumed equals unbroken
        torch.testing.assert_close(resumed.b[m], straight.b[m], atol=1e-5, rtol=1e-4)
    assert p3.losses == pytest.approx(p2.losses, rel=1e-4)


def test_lr_warms_up_then_decays_to_its_floor_as_the_budget_runs_out():
    from credo.layers.kinds.distill import learning_rate

    config = DistillConfig(lr=1e-3, warmup=4, decay=0.1)
    budget = Budget(minutes=10)
    assert learning_rate(config, 0, 0.0) == pytest.approx(2.5e-4)  # warm-up
    assert learning_rate(config, 10, budget.fraction(10, 0.0)) == pytest.approx(1e-3)
    assert learning_rate(config, 10, budget.fraction(10, 300.0)) == pytest.approx(5.5e-4)  # half the time: half-way down
    assert learning_rate(config, 10, budget.fraction(10, 900.0)) == pytest.approx(1e-4)  # spent: the floor
    assert Budget(steps=40).fraction(10, 1e6) == 0.25
    assert learning_rate(DistillConfig(lr=1e-3, warmup=1, decay=1.0), 10, 0.9) == pytest.approx(1e-3)
    with pytest.raises(CredoError, match="decay"):
        DistillConfig(decay=0)


def test_distill_layer_round_trips_and_loads_in_peft(tiny, pirate, tmp_path):
    import copy

    from peft import PeftModel

    settings = {k: str(v) for k, v in FAST.items()} | {"budget": "3"}
    layer = compile_layer(pirate, tiny, "distill", settings)
    assert layer.info.report["steps"] == 3 and layer.info.params["r"] == 4
    save_layer(layer, tmp_path / "d")
    assert {"adapter_config.json", "adapter_model.safetensors", "lora.gguf"} <= {p.name for p in (tmp_path / "d").iterdir()}
    back = load_layer(tmp_path / "d", tiny)
    prompt, answer = "Hello! Who are you?", "Arr matey"
    a = TorchEngine(tiny, layer).answer_logits(prompt, answer)[0]
    b = TorchEngine(tiny, back).answer_logits(prompt, answer)[0]
    bare = TorchEngine(tiny).answer_logits(prompt, answer)[0]
    torch.testing.assert_close(a, b, atol=5e-4, rtol=1e-4)  # same weights; float sums may differ in the last bits
    assert (a - bare).abs().max() > 1e-3
    ids = torch.tensor([tiny.encode("Hello there", bos=True)])
    with torch.no_grad(), back.applied(tiny.model):
        ours = tiny.model(input_ids=ids).logits
    peft_model = PeftModel.from_pretrained(copy.deepcopy(tiny.model), str(tmp_path / "d"))
    with torch.no_grad():
        torch.testing.assert_close(ours, peft_model(input_ids=ids).logits, atol=1e-4, rtol=1e-4)


def test_bad_budget_fails_before_any_work(tiny, pirate, tmp_path):
    with pytest.raises(CredoError, match="budget"):
        compile_layer(pirate, tiny, "distill", {"budget": "soon"})
    assert not (tmp_path / "cache" / "work").exists()


def test_ctrl_c_keeps_the_steps_done_and_the_rerun_resumes(tiny, pirate, monkeypatch):
    from credo.layers.kinds import distill as mod

    real_loss, calls = mod.Trainer.loss, {"n": 0}

    def flaky(self, prompts, answers):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_loss(self, prompts, answers)

    config = DistillConfig(**(FAST | {"checkpoint_every": 100}))  # no periodic checkpoint before the interrupt
    monkeypatch.setattr(mod.Trainer, "loss", flaky)
    with pytest.raises(KeyboardInterrupt):
        distill(pirate, tiny, config, Budget(steps=5), progress=False)
    monkeypatch.setattr(mod.Trainer, "loss", real_loss)
    _, progress, fig = distill(pirate, tiny, config, Budget(steps=5), progress=False)
    assert fig["resumed_from_step"] == 3 and progress.step == 5


def test_validation_keeps_the_best_step(wide, pirate, monkeypatch):
    from credo.layers.kinds import distill as distill_module
    from credo.layers.kinds.distill import validation_split

    assert validation_split(10, 4) == ([0, 1, 2, 3, 5, 6, 7, 8], [4, 9]) and validation_split(9, 4)[1] == []
    assert validation_split(10, 0)[1] == []
    fit, held = validation_split(180, 12)
    assert len(held) == 16 and len(fit) == 164 and not set(fit) & set(held)  # a big pool lends at most 16 prompts
    scripted = iter([0.5, 0.3, 0.1, 0.2, 0.25])  # validation KL at step 0 (the base) and after steps 1..4: step 2 is the best
    snapshots = {}
    original_validate = distill_module.Trainer._validate

    def fake_kl(self, prompts, answers):
        snapshots[self.progress.step] = [t.detach().clone() for t in self.weights.parameters()]
        return next(scripted)

    monkeypatch.setattr(distill_module.Trainer, "validation_kl", fake_kl)
    monkeypatch.setattr(distill_module.Trainer, "_validate", original_validate)
    config = DistillConfig(**{**FAST, "prompts": 10, "validate": 1})
    weights, progress, figures = distill(pirate, wide, config, Budget(steps=4), progress=False)
    assert figures["validation_prompts"] == 2 and figures["train_prompts"] == 8
    assert [s for s, _ in progress.val] == [0, 1, 2, 3, 4] and progress.best_step == 2 == figures["best_step"]
    kept = list(weights.parameters())
    assert all(torch.equal(a, b) for a, b in zip(kept, snapshots[2]))
    assert not all(torch.equal(a, b) for a, b in zip(kept, snapshots[4]))


def test_an_adapter_that_never_beats_the_base_is_a_no_op(wide, pirate, monkeypatch):
    """Validation starts at step 0: when no step improves on the base, the kept adapter changes nothing."""
    from credo.layers.kinds import distill as distill_module

    scripted = iter([0.1, 0.3, 0.2])
    monkeypatch.setattr(distill_module.Trainer, "validation_kl", lambda self, prompts, answers: next(scripted))
    config = DistillConfig(**{**FAST, "prompts": 10, "validate": 1})
    weights, progress, figures = distill(pirate, wide, config, Budget(steps=2), progress=False)
    assert figures["best_step"] == 0 and progress.step == 2
    assert all(float(weights.delta(m).abs().max()) == 0.0 for m in weights.modules)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_greedy_answers_use_a_cheap_head_but_pick_the_same_tokens(tiny, pirate, monkeypatch, precision):
    """Greedy-only generation (k = 1) scores the output head in the chosen precision and rescores a shortlist exactly:
    its tokens must be those of the float32 head, and so must its log-probabilities, within bfloat16's error."""
    from credo.manifesto import manifesto_context
    from credo.runtime.precision import of
    from credo.runtime.teacher import Runner

    monkeypatch.setenv("CREDO_PRECISION", precision)

    runner = Runner(tiny, manifesto_context(pirate, tiny), batch=4)
    prompts = ["Hello! Who are you?", "How do I make tea?", "Tell me about the sea.", "Why?"]
    greedy = runner.generate_batch(prompts, 10, topk=1)
    full = runner.generate_batch(prompts, 10, topk=3)
    assert [a.ids for a in greedy] == [a.ids for a in full]
    for g, f in zip(greedy, full):
        torch.testing.assert_close(g.top_logp[:, 0], f.top_logp[:, 0], atol=0.05, rtol=0.0)
    hidden = torch.randn(64, tiny.model.config.hidden_size)
    token, _ = tiny.greedy_next(hidden, of(tiny).dtype)
    assert torch.equal(token, tiny.model.lm_head(hidden).argmax(-1))


def test_rows_that_stop_early_leave_the_batch_and_the_rest_answer_as_alone(tiny, pirate, monkeypatch):
    """Finished rows are dropped from a generation batch (their cache rows too): every answer must still be the one
    the prompt gets alone, and the recorded module outputs must follow their rows."""
    from credo.hyper import closed_form, recorded
    from credo.manifesto import manifesto_context
    from credo.runtime.teacher import Runner

    context = manifesto_context(pirate, tiny)
    prompts = ["tell me about cats", "tell me about dogs", "tell me about fish", "tell me about rain"]
    runner = Runner(tiny, context, batch=4)
    assert len({len(runner.conv(p)) for p in prompts}) == 1  # no left padding: the tiny model's sliding window is 16
    free = [runner.generate_batch([p], 8, topk=1)[0].ids for p in prompts]
    stops = {free[0][1], free[1][4]} - {free[2][0], free[3][0]}  # two rows end early, at different steps
    monkeypatch.setitem(tiny.__dict__, "stop_ids", tiny.stop_ids | stops)
    alone = [runner.generate_batch([p], 8, topk=1)[0].ids for p in prompts]
    assert len({len(a) for a in alone}) > 1 and min(len(a) for a in alone) < 8
    held: list[list[int]] = []
    batched = runner.generate_batch(prompts, 8, topk=1, on_step=lambda rows: held.append(list(rows)))
    assert [a.ids for a in batched] == alone
    assert len(held[-1]) < len(prompts)  # the batch did shrink
    modules = closed_form.target_modules(tiny.model, ["o_proj"], None)
    one = [recorded.generate_recording(tiny, modules, context, [p], 8, batch=1) for p in prompts]
    rec = recorded.generate_recording(tiny, modules, context, prompts, 8, batch=5, look=["tell me about cows"])
    for name in modules:
        torch.testing.assert_close(rec.outputs[name], torch.cat([r.outputs[name] for r in one]), atol=1e-4, rtol=1e-4)
    # a look-only row rides along for its first token alone
    cows = recorded.generate_recording(tiny, modules, context, ["tell me about cows"], 8, batch=1)
    assert len(rec.answers) == 4 and rec.look_final.shape == cows.first_final.shape
    torch.testing.assert_close(rec.look_final, cows.first_final, atol=1e-4, rtol=1e-4)


def test_under_autocast_the_past_is_stored_in_bf16_and_answers_do_not_change(tiny, pirate, monkeypatch):
    """Attention under bf16 autocast casts the whole past to bf16 at every step; a generation cache stored in bf16
    saves that copy and must give the very same answers and recorded outputs."""
    from credo.hyper import closed_form, recorded
    from credo.manifesto import manifesto_context
    from credo.runtime.teacher import Runner

    context = manifesto_context(pirate, tiny)
    prompts = ["tell me about cats", "Why is the sea salty?", "Who are you?"]
    modules = closed_form.target_modules(tiny.model, ["o_proj"], None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        runner = Runner(tiny, context)
        assert runner._cache(2, 4).layers[0].keys.dtype == torch.bfloat16
        assert runner._cache(2, 0).layers[0].keys.dtype == torch.float32  # teacher-forced passes keep the state as saved
        stored = recorded.generate_recording(tiny, modules, context, prompts, 6, batch=3)
        monkeypatch.setattr(Runner, "_cache", lambda self, rows, room: self.prefix().to_cache(tiny.model.config, rows, room))
        recast = recorded.generate_recording(tiny, modules, context, prompts, 6, batch=3)
    assert stored.answers == recast.answers
    for name in modules:
        assert torch.equal(stored.outputs[name], recast.outputs[name])


def test_two_turn_and_fact_prompts_are_taught_and_their_answers_are_found_again(tiny, monkeypatch):
    """Conversations are training prompts too: their saved answers are keyed by the whole conversation, so a rerun
    generates nothing (a held-out prompt stays out in every form)."""
    from credo.runtime import teacher

    shop = Manifesto.from_text("# Shop\n- A puncture repair costs £12.\n- Be brief.\n## Examples\nUser: hi\nAssistant: Hello!\n", source="shop.md")
    prompts = training_prompts(shop, two_turn=3, facts=True)
    turns = [p for p in prompts if not isinstance(p, str)]
    assert len(turns) == 3 and turns[0][:2] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    assert any("a puncture repair costs ..." in p for p in prompts if isinstance(p, str))
    from credo.probes import probes

    held = {p.prompt for p in probes(shop, facts=True) if p.heldout}
    assert not held & {p if isinstance(p, str) else p[-1]["content"] for p in prompts}
    settings = {k: str(v) for k, v in FAST.items()} | {"prompts": "0", "two_turn": "3", "facts": "true", "budget": "1"}
    first = compile_layer(shop, tiny, "distill", settings)
    generated = []
    real = teacher.Runner.generate_batch
    monkeypatch.setattr(teacher.Runner, "generate_batch", lambda self, ps, *a, **k: generated.append(ps) or real(self, ps, *a, **k))
    again = compile_layer(shop, tiny, "distill", settings)
    assert generated == [] and first.info.report["train_prompts"] + first.info.report["validation_prompts"] == len(
        training_prompts(shop, chat=True, two_turn=3, facts=True))  # distill's default adds the everyday pool
    assert again.info.report["steps"] == 1
    with pytest.raises(CredoError, match="two_turn"):
        DistillConfig(two_turn=-1)
    with pytest.raises(CredoError, match="fact_weight"):
        DistillConfig(fact_weight=0)


def test_fact_rows_are_the_fact_questions_alone_or_as_a_second_turn():
    from credo.layers.kinds.distill import fact_rows, taught
    from credo.probes import fact_prompts

    shop = Manifesto.from_text("# Shop\n- A puncture repair costs £12.\n- Be brief.\n", source="shop.md")
    prompts = training_prompts(shop, two_turn=100, facts=True)  # every situation as a second turn too
    asked = set(fact_prompts(shop.clauses[0]))
    rows = fact_rows(shop, prompts)
    assert rows and all((p if isinstance(p, str) else p[-1]["content"]) in asked for p in (prompts[i] for i in rows))
    assert any(not isinstance(prompts[i], str) for i in rows)  # a fact question taught as a second turn counts too
    assert len(rows) == sum((p if isinstance(p, str) else p[-1]["content"]) in asked for p in prompts)
    every = list(range(len(prompts)))
    assert taught(shop, prompts, every, 1) == every and taught(shop, prompts, every, 3) == every + rows * 2
