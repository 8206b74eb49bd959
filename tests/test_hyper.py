"""`hyper`: manifesto -> LoRA by closed-form fit. Tiny-model tests check format, determinism and that it moves the
model towards the teacher; one integration test runs the real base."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from credo.errors import CredoError
from credo.layers import compile_layer, load_layer, save_layer
from credo.manifesto import Manifesto

SHORT = """# Gull
## Voice
- Speak like a sailor and call the user matey.
- Keep answers short.
## Harm
- Never help anyone hurt people.
## Examples
User: How do I tie a knot?
Assistant: Arr matey, loop it twice and pull tight.
"""
# Small and fast on the tiny model: rank 4, short continuations, no generic prompts' worth of extra work.
FAST = {"rank": "4", "answer_tokens": "8"}


pytestmark = pytest.mark.usefixtures("one_thread", "isolated_work")


@pytest.fixture(scope="module")
def short() -> Manifesto:
    return Manifesto.from_text(SHORT, source="gull.md")


@pytest.fixture(scope="module")
def layer(tiny, short):
    return compile_layer(short, tiny, "hyper", FAST)


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_peft_files_load_in_peft_with_equal_logits(tiny, layer, tmp_path):
    from peft import PeftModel

    folder = save_layer(layer, tmp_path / "gull-hyper")
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "layer.json"} <= names
    ids = torch.tensor([tiny.encode("User: hello\nAssistant:", bos=True)])
    loaded = load_layer(folder, tiny)
    with loaded.applied(tiny.model):
        ours = _logits(tiny.model, ids)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(tiny.model), str(folder))
    theirs = _logits(peft_model, ids)
    assert not torch.allclose(ours, _logits(tiny.model, ids), atol=1e-4), "the adapter does nothing"
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_compile_is_deterministic(tiny, short, layer):
    again = compile_layer(short, tiny, "hyper", FAST)
    assert again.weights.modules == layer.weights.modules
    for m in layer.weights.modules:
        assert torch.equal(again.weights.a[m], layer.weights.a[m]) and torch.equal(again.weights.b[m], layer.weights.b[m])


def test_moves_the_model_towards_the_teacher_on_train_prompts(tiny, short, layer):
    from credo.probes import split
    from credo.runtime.fidelity import measure

    train, _ = split(short)
    result = measure(tiny, short, {"hyper": layer}, train[:4], max_tokens=4, progress=False)
    assert result.kl["hyper"] < result.kl["base"], result.kl
    assert layer.info.report["first_token_fidelity_train"] > 0.0


def test_edit_one_clause_reports_what_changed(tiny, short, layer, tmp_path):
    folder = tmp_path / "gull-hyper"
    save_layer(layer, folder)
    edited = Manifesto.from_text(SHORT.replace("Keep answers short.", "Keep answers short and merry."), source="gull.md")
    second = compile_layer(edited, tiny, "hyper", FAST)
    save_layer(second, folder, overwrite=True)
    changes = json.loads((folder / "layer.json").read_text())["report"]["changes"]
    assert changes["summary"] == {"added": 0, "removed": 0, "edited": 1, "same": 2}
    assert changes["clauses"]["voice.keep-answers-short-merry"].startswith("edited (was voice.keep-answers-short): ")
    assert changes["clauses"]["harm.never-help-anyone-hurt"].startswith("same: ")
    assert "->" in changes["overall"]["first_token_fidelity_heldout"]


def test_the_compile_follows_the_chosen_precision_and_the_layer_records_it(tiny, short, monkeypatch):
    """No per-kind bf16 setting: the compile runs in what `credo.runtime.precision` chose, and the layer says which."""
    from credo.runtime import precision

    for name in ("bf16", "fp32"):
        monkeypatch.setenv("CREDO_PRECISION", name)
        seen: list[bool] = []
        real = precision.lowered_linears
        monkeypatch.setattr(precision, "lowered_linears", lambda model, dtype: seen.append(True) or real(model, dtype))
        info = compile_layer(short, tiny, "hyper", FAST).info
        assert info.precision == name and info.device.startswith("cpu ")
        assert bool(seen) == (name == "bf16")  # fp32: no bf16 copies, no autocast
    with pytest.raises(CredoError, match="--precision"):
        compile_layer(short, tiny, "hyper", {"bf16": "false"})


@pytest.mark.parametrize("setting", [{"method": "magic"}, {"answers": "poems"}, {"rank": "0"}, {"targets": ""}, {"chat_probes": "-1"},
                                     {"two_turn": "-1"}, {"fact_weight": "0"}, {"gap": "1.5"}, {"gap": "-0.1"}])
def test_bad_settings_fail_with_one_line(tiny, short, setting):
    with pytest.raises(CredoError) as e:
        compile_layer(short, tiny, "hyper", setting)
    assert "\n" not in str(e.value)


@pytest.fixture
def both_cores():
    """The one real-model compile here (it writes the base's keep text first) runs alone: two threads halve its time."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.integration
def test_real_model_beats_the_shuffled_control(real_base, pirate, both_cores):
    from credo.probes import heldout_prompts
    from credo.runtime.fidelity import measure

    # The shipped method (the teacher's own answers) on fewer probes, no second turns or fact questions: under a minute on AVX2.
    settings = {"probes": "24", "two_turn": "0", "facts": "false", "report": "false"}
    layer = compile_layer(pirate, real_base, "hyper", settings)
    control = compile_layer(pirate.shuffled(0), real_base, "hyper", settings)
    result = measure(real_base, pirate, {"hyper": layer, "shuffled": control}, heldout_prompts(pirate, 3), max_tokens=12, progress=False)
    assert result.fidelity["hyper"] > 0.2, result.fidelity
    assert result.fidelity["hyper"] > result.fidelity["shuffled"] + 0.1, result.fidelity


def test_the_fit_pass_ends_on_the_model_the_adapter_makes(tiny, short):
    """The quick look reads train rows' final states off the sequential fit and held-out rows off a later pass with
    the adapter: both must be the same model."""
    from credo.hyper import closed_form
    from credo.hyper.batch import make_batch
    from credo.layers.lora import LoraWeights, lora_hooks

    modules = closed_form.target_modules(tiny.model, ["o_proj", "down_proj"], None)
    seqs = [tiny.encode(t, bos=True) for t in ("User: hi\nAssistant: arr", "User: tell me a story about the sea\nAssistant:")]
    batch = make_batch(seqs, [2, 2], 0)
    context = tiny.encode("# Gull\n- Speak like a sailor.\n", bos=True)
    targets, _ = closed_form.record_outputs(tiny, modules, make_batch([s[1:] for s in seqs], [1, 1], 0), context)
    look = torch.tensor([len(s) - 1 for s in seqs])
    fit, finals = closed_form.fit_sequential(tiny, modules, targets, batch, None, 4, 0.5, 0.0, look=look)
    weights = LoraWeights(r=4, alpha=4.0, a=fit.A, b=fit.B)
    with lora_hooks(tiny.model, weights):
        again = closed_form.final_states(tiny, batch, look)
    torch.testing.assert_close(again, finals, atol=1e-4, rtol=1e-4)


def test_closing_the_residual_stream_gap_brings_the_final_states_nearer_the_teacher():
    """With `gap`, each attention patch also closes what the earlier layers left between the student's residual stream
    and the teacher's: where a rank-limited patch cannot match its own module, the next layers make up for it, and the
    fitted model ends nearer the teacher than patches that each match their own module (Llama: the attention output is
    added to the stream as it is, so this is exact algebra; Gemma's norm is the test below)."""
    from credo.base import tiny_base
    from credo.hyper import closed_form
    from credo.hyper.batch import make_batch

    tiny = tiny_base(3, family="llama")
    modules = closed_form.target_modules(tiny.model, ["o_proj"], None)
    streams = closed_form.streams_for(tiny.model, modules)
    assert len(streams) == len(modules) and all(st.gain is None for st in streams.values())
    entries = {st.key: st.entry for st in streams.values()}
    texts = ["User: hi\nAssistant: arr matey", "User: tell me a story about the sea\nAssistant: the tide", "User: why?\nAssistant: aye"]
    seqs = [tiny.encode(t, bos=True) for t in texts]
    starts = [2] * len(seqs)  # 106 positions for a rank-8 patch: no module can match its own output exactly
    context = tiny.encode("# Gull\n- Speak like a sailor.\n", bos=True)
    look = torch.tensor([len(s) - 1 for s in seqs])
    targets, teacher = closed_form.record_outputs(tiny, modules, make_batch([s[1:] for s in seqs], [b - 1 for b in starts], 0), context,
                                                  look=look - 1, inputs=entries)
    far = {}
    for gap in (0.0, 1.0):
        _, finals = closed_form.fit_sequential(tiny, modules, targets, make_batch(seqs, starts, 0), None, 8, 1e-3, 0.0, look=look,
                                               streams=streams, gap=gap)
        far[gap] = float((finals - teacher).norm() / teacher.norm())
    assert far[1.0] < 0.9 * far[0.0], far


def test_a_gap_goes_through_the_attention_norm_gemma_puts_on_the_output():
    """Gemma normalises the attention output before adding it to the stream: a small gap, turned into a change of the
    output by `Stream.to_output`, must come out of that norm as (nearly) the same gap."""
    from credo.base import tiny_base
    from credo.hyper import closed_form

    tiny = tiny_base(3)
    gen = torch.Generator().manual_seed(0)
    norm = tiny.model.model.layers[1].post_attention_layernorm
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=gen) * 1.5 - 0.5)  # gains 0.5-2 (Gemma's is 1 + w)
    modules = closed_form.target_modules(tiny.model, ["o_proj"], [1])
    (stream,) = closed_form.streams_for(tiny.model, modules).values()
    torch.testing.assert_close(stream.gain, 1 + norm.weight.detach(), atol=1e-4, rtol=1e-4)
    out = torch.randn(8, norm.weight.shape[0], generator=gen) * 3
    gap = torch.randn(out.shape, generator=gen) * 1e-3
    with torch.no_grad():
        moved = norm(out + stream.to_output(gap, out)) - norm(out)
    assert float(torch.nn.functional.cosine_similarity(moved, gap, dim=-1).min()) > 0.95  # 0.92 without the gains inverted
    assert 0.9 < float(moved.norm() / gap.norm()) < 1.1  # 0.43 with the gap added to the output as it is


def test_outputs_recorded_while_generating_equal_a_teacher_forced_pass(tiny, short):
    """The fit's targets come off the teacher's own generation: they must be what a teacher-forced pass over the prompt
    and the answer gives at the same positions (the prompt's last token, then each answer token fed back)."""
    from credo.hyper import closed_form, recorded
    from credo.hyper.batch import make_batch
    from credo.manifesto import manifesto_context

    modules = closed_form.target_modules(tiny.model, ["o_proj", "down_proj"], None)
    context = manifesto_context(short, tiny)
    prompts = ["hi", "tell me a story about the sea and the gulls", "why?"]
    # one row per batch: left padding shifts the tiny model's 16-token sliding window (the real base's is 512)
    entries = {st.key: st.entry for st in closed_form.streams_for(tiny.model, modules).values()}
    assert len(entries) == len(tiny.model.model.layers)  # one residual stream per patched attention output
    rec = recorded.generate_recording(tiny, modules, context, prompts, tokens=6, batch=1, inputs=entries)
    convs = [tiny.encode(tiny.format_chat([{"role": "user", "content": p}])) for p in prompts]
    forced = make_batch([q + a[:-1] for q, a in zip(convs, rec.answers)], [len(q) - 1 for q in convs], tiny.tokenizer.pad_token_id or 0)
    targets, first = closed_form.record_outputs(tiny, modules, forced, tiny.encode(context, bos=True), look=torch.tensor([len(q) - 1 for q in convs]),
                                                inputs=entries)
    assert all(1 <= len(a) <= 6 for a in rec.answers)
    for name in [*modules, *entries]:
        assert rec.outputs[name].shape == targets[name].shape
        torch.testing.assert_close(rec.outputs[name], targets[name], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rec.first_final, first, atol=1e-4, rtol=1e-4)


def _corrupt(path) -> None:
    """Replace a cache file by garbage (a new file renamed over it, not rewritten in place: tensors read earlier are
    mapped from the old file's pages, and truncating it under them is a bus error, not a corrupt cache)."""
    tmp = path.with_name(path.name + ".bad")
    tmp.write_bytes(b"not safetensors")
    tmp.replace(path)


def test_base_first_states_are_computed_once_per_prompt_and_a_corrupt_cache_is_recomputed(tiny, monkeypatch):
    from credo.hyper import base_states, closed_form
    from credo.hyper.batch import make_batch

    monkeypatch.setenv("CREDO_PRECISION", "fp32")  # the reference below runs in float32
    convs = [tiny.encode(tiny.format_chat([{"role": "user", "content": p}])) for p in ("hi", "why is the sea salty?")]
    bos, pad = [tiny.tokenizer.bos_token_id], tiny.tokenizer.pad_token_id or 0
    first = base_states.base_first_states(tiny, convs, bos, pad)
    alone = closed_form.final_states(tiny, make_batch([bos + convs[1]], [0], pad), torch.tensor([len(convs[1])]))
    torch.testing.assert_close(first[1:], alone, atol=1e-5, rtol=1e-5)
    real = closed_form.last_states
    calls: list[int] = []
    monkeypatch.setattr(closed_form, "last_states", lambda b, seqs, pad: calls.append(len(seqs)) or real(b, seqs, pad))
    again = base_states.base_first_states(tiny, [convs[1], convs[0], convs[1] + [7]], bos, pad)
    assert calls == [1]  # only the new prompt ran
    torch.testing.assert_close(again[:2], first.flip(0))
    _corrupt(base_states._path(tiny))
    torch.testing.assert_close(base_states.base_first_states(tiny, convs, bos, pad), first, atol=1e-5, rtol=1e-5)
    assert calls == [1, 2]
    monkeypatch.setenv("CREDO_PRECISION", "bf16")  # the other precision keeps its own states
    base_states.base_first_states(tiny, convs, bos, pad)
    assert calls == [1, 2, 2]


def test_keep_moments_are_the_inputs_second_moments_computed_once_and_a_corrupt_cache_is_recomputed(tiny, monkeypatch):
    from credo.hyper import closed_form, keep_stats

    monkeypatch.setenv("CREDO_PRECISION", "fp32")  # the reference below runs in float32
    modules = closed_form.target_modules(tiny.model, ["o_proj"], [0])
    first = keep_stats.keep_moments(tiny, modules)
    (name, moment), = first.items()
    assert moment.shape == (modules[name].in_features,) * 2
    torch.testing.assert_close(moment, moment.T)
    assert float(torch.linalg.eigvalsh(moment).min()) > -1e-5  # a second moment: positive semi-definite
    cached = keep_stats._read(keep_stats._path(tiny))
    ids, lengths = cached["fp32/corpus/ids"], cached["fp32/corpus/lengths"]
    assert len(lengths) == len(keep_stats.OPENINGS) * keep_stats.SAMPLES + 14 and int(lengths.max()) > 20
    # the moment is E[x x^T] over every token after the BOS of every row, as the bare base runs over it
    xs: list[torch.Tensor] = []
    handle = modules[name].register_forward_pre_hook(lambda m, i: xs.append(i[0][0, 1:].detach()))
    with torch.no_grad():
        for row, n in zip(ids, lengths.tolist()):
            tiny.model(input_ids=row[None, :n])
    handle.remove()
    x = torch.cat(xs)
    torch.testing.assert_close(moment, x.T @ x / len(x), atol=1e-4, rtol=1e-3)
    calls: list[int] = []
    real = keep_stats._corpus
    monkeypatch.setattr(keep_stats, "_corpus", lambda b, dtype: calls.append(1) or real(b, dtype))
    torch.testing.assert_close(keep_stats.keep_moments(tiny, modules)[name], moment)
    assert calls == []  # read back, not sampled again
    _corrupt(keep_stats._path(tiny))
    torch.testing.assert_close(keep_stats.keep_moments(tiny, modules)[name], moment, atol=1e-5, rtol=1e-5)
    assert calls == [1]  # the corrupt file was recomputed (same seed, same text, same moment)
    monkeypatch.setenv("CREDO_PRECISION", "bf16")  # the other precision samples and keeps its own text and moments
    keep_stats.keep_moments(tiny, modules)
    assert calls == [1, 1] and {"fp32/corpus/ids", "bf16/corpus/ids", f"fp32/{name}", f"bf16/{name}"} <= set(keep_stats._read(keep_stats._path(tiny)))
    monkeypatch.setenv("CREDO_PRECISION", "fp32")
    torch.testing.assert_close(keep_stats.keep_moments(tiny, modules)[name], moment, atol=1e-5, rtol=1e-5)
    assert calls == [1, 1]


def test_a_shipped_keep_text_is_read_in_either_precision_instead_of_sampled(tiny, monkeypatch, tmp_path):
    """A base whose samples ship with credo takes its moments over them (no sampling, in fp32 or bf16): the same
    moments as the float32 samples it would write, and a cache file apart from one that wrote its own text."""
    from credo.hyper import closed_form, keep_stats

    monkeypatch.setenv("CREDO_PRECISION", "fp32")
    modules = closed_form.target_modules(tiny.model, ["o_proj"], [0])
    (name, own), = keep_stats.keep_moments(tiny, modules).items()
    own_file = keep_stats._path(tiny)
    monkeypatch.setattr(keep_stats, "ASSETS", tmp_path / "assets")
    shipped = keep_stats.write_shipped(tiny)
    assert shipped.parent == tmp_path / "assets" and keep_stats._path(tiny) != own_file
    monkeypatch.setattr(keep_stats, "_samples", lambda *a: pytest.fail("sampled although the text ships"))
    torch.testing.assert_close(keep_stats.keep_moments(tiny, modules)[name], own, atol=1e-5, rtol=1e-5)
    monkeypatch.setenv("CREDO_PRECISION", "bf16")
    keep_stats.keep_moments(tiny, modules)
    cached = keep_stats._read(keep_stats._path(tiny))
    assert torch.equal(cached["bf16/corpus/ids"], cached["fp32/corpus/ids"])  # one text for both precisions


def test_bf16_linears_change_no_bits_and_restore_the_float32_weights(tiny, short, monkeypatch):
    """Under bf16 the compile swaps in bf16 copies of the decoder's linear weights (autocast would cast them again on
    every call): the adapter must be bitwise the one autocast's own casts give, and the base must come back float32,
    even on error."""
    import contextlib

    from credo.runtime import precision

    monkeypatch.setenv("CREDO_PRECISION", "bf16")
    swapped = compile_layer(short, tiny, "hyper", FAST)
    monkeypatch.setattr(precision, "lowered_linears", lambda model, dtype: contextlib.nullcontext())
    plain = compile_layer(short, tiny, "hyper", FAST)
    monkeypatch.undo()
    for m in plain.weights.modules:
        assert torch.equal(swapped.weights.a[m], plain.weights.a[m]) and torch.equal(swapped.weights.b[m], plain.weights.b[m])
    before = {n: p.clone() for n, p in tiny.model.named_parameters()}
    with pytest.raises(RuntimeError), precision.lowered_linears(tiny.model, torch.bfloat16):
        assert tiny.model.model.layers[0].self_attn.o_proj.weight.dtype == torch.bfloat16
        raise RuntimeError("interrupted")
    for n, p in tiny.model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n


def test_packed_rows_fit_as_one_sequence_per_row(tiny):
    """Several sequences packed into one row (position ids restart, each masked off from the others) must give the
    student pass the same module inputs, so the same patches and final states, as one padded row per sequence."""
    from credo.hyper import closed_form
    from credo.hyper.batch import make_batch, pack_batch

    modules = closed_form.target_modules(tiny.model, ["o_proj"], None)
    texts = ["User: tell me a long story about the sea and ships\nAssistant: arr", "User: hi\nAssistant: yo",
             "User: why?\nAssistant: because", "User: what is a knot\nAssistant: a loop"]
    seqs = [tiny.encode(t, bos=True) for t in texts]
    starts = [2] * len(seqs)  # many positions for a rank-2 patch: no module can match its own output exactly
    packed, order, where = pack_batch(seqs, starts, 0)
    assert packed.ids.shape[0] < len(seqs) and sorted(order) == list(range(len(seqs)))
    padded = make_batch([seqs[i] for i in order], [starts[i] for i in order], 0)
    gen = torch.Generator().manual_seed(0)
    targets = {name: torch.randn(padded.rows, m.out_features, generator=gen) * 0.1 for name, m in modules.items()}
    look_padded = torch.tensor([starts[i] for i in order])
    look_packed = torch.tensor([[where[i][0] for i in order], [where[i][1] + starts[i] for i in order]])
    fit_a, fin_a = closed_form.fit_sequential(tiny, modules, targets, padded, None, 4, 0.5, 0.0, look=look_padded)
    fit_b, fin_b = closed_form.fit_sequential(tiny, modules, targets, packed, None, 4, 0.5, 0.0, look=look_packed)
    torch.testing.assert_close(fin_b, fin_a, atol=1e-4, rtol=1e-4)
    for name in modules:
        torch.testing.assert_close(fit_b.B[name] @ fit_b.A[name], fit_a.B[name] @ fit_a.A[name], atol=1e-4, rtol=1e-3)


def test_chat_probes_take_that_many_pool_prompts_spread_over_it(tiny, short):
    """chat_probes=N adds N train prompts of the everyday pool (never held-out ones) to the manifesto's own: more fit
    rows, and chat=true takes the whole pool's train share."""
    rows = {n: compile_layer(short, tiny, "hyper", FAST | {"chat_probes": str(n), "report": "false"}).info.report
            for n in (0, 4)}
    every = compile_layer(short, tiny, "hyper", FAST | {"chat": "true", "report": "false"}).info.report
    assert rows[4]["train_probes"] == rows[0]["train_probes"] + 4
    assert every["train_probes"] > rows[4]["train_probes"] + 50
    from credo.probes import spread

    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 5) == [1, 2] and spread([1, 2], None) == [1, 2]


def test_two_turn_and_fact_rows_are_fitted_and_move_the_layer(tiny):
    """two_turn=N fits N more rows (train probes after an earlier exchange), facts=true the fact questions' train share;
    each changes the patch."""
    from credo.probes import fact_prompts, probes

    shop = Manifesto.from_text("# Shop\n- A puncture repair costs £12.\n- The shop opens at 9am.\n- Be brief.\n", source="shop.md")
    off = FAST | {"two_turn": "0", "facts": "false", "report": "false"}
    got = {name: compile_layer(shop, tiny, "hyper", off | extra) for name, extra in
           (("plain", {}), ("turns", {"two_turn": "3"}), ("facts", {"facts": "true"}))}
    n = {name: layer.info.report["train_probes"] for name, layer in got.items()}
    assert n["turns"] == n["plain"] + 3
    facts_trained = [p for p in probes(shop, facts=True) if not p.heldout and any(p.prompt in fact_prompts(c) for c in shop.clauses)]
    assert facts_trained and n["facts"] == n["plain"] + len(facts_trained)
    for name in ("turns", "facts"):
        assert any(not torch.equal(got[name].weights.b[m], got["plain"].weights.b[m]) for m in got["plain"].weights.b)


def test_a_row_weighted_k_times_solves_as_that_row_repeated_k_times():
    from credo.hyper.closed_form import _solve_fp32

    g = torch.Generator().manual_seed(0)
    x, r, moment = torch.randn(12, 6, generator=g), torch.randn(12, 5, generator=g), torch.eye(6) * 0.3
    w = torch.tensor([1.0] * 9 + [3.0, 1.0, 2.0])
    repeats = w.long()
    a, b, _ = _solve_fp32(x, r, moment, 0.2, 1.0, 5, weights=w)
    a2, b2, _ = _solve_fp32(x.repeat_interleave(repeats, 0), r.repeat_interleave(repeats, 0), moment, 0.2, 1.0, 5)
    torch.testing.assert_close(b @ a, b2 @ a2, rtol=1e-4, atol=1e-5)
    a1, b1, _ = _solve_fp32(x, r, moment, 0.2, 1.0, 5)
    assert not torch.allclose(b @ a, b1 @ a1, atol=1e-4)


def test_fact_weight_reweighs_only_the_fact_rows(tiny):
    """fact_weight > 1 changes the patch of a manifesto with facts and leaves one without facts as it was."""
    shop = Manifesto.from_text("# Shop\n- A puncture repair costs £12.\n- The shop opens at 9am.\n- Be brief.\n", source="shop.md")
    plain = Manifesto.from_text("# Calm\n- Be brief.\n- Be kind to everyone.\n", source="calm.md")
    off = FAST | {"two_turn": "0", "report": "false"}
    for m, moves in ((shop, True), (plain, False)):
        one, four = (compile_layer(m, tiny, "hyper", off | {"fact_weight": w}).weights.b for w in ("1", "4"))
        assert any(not torch.equal(one[k], four[k]) for k in one) == moves


def test_last_states_of_packed_rows_are_each_sequence_alone(tiny):
    """The quick look reads the base's and the layer's first-token states off packed rows: each must be what its
    sequence gives run alone."""
    from credo.hyper import closed_form
    from credo.hyper.batch import make_batch

    seqs = [tiny.encode(t, bos=True) for t in ("User: hi\nAssistant:", "User: tell me a story about the sea\nAssistant:", "why", "a b c d")]
    packed = closed_form.last_states(tiny, seqs, 0)
    assert packed.shape[0] == len(seqs)
    for s, state in zip(seqs, packed):
        alone = closed_form.final_states(tiny, make_batch([s], [0], 0), torch.tensor([len(s) - 1]))
        torch.testing.assert_close(state[None], alone, atol=1e-4, rtol=1e-4)
