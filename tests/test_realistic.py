"""Realistic sets: the shipped ones load, no compile reads one of their messages, bad lines fail with file and line, and
the realistic figures (eval column, compile report) are the project's fidelity and a correct facts-kept count."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from credo.errors import CredoError
from credo.manifesto import Manifesto
from credo.realistic import RealisticError, load_for, load_set, sidecar_path

REPO = Path(__file__).resolve().parent.parent
MANIFESTOS = sorted((REPO / "examples").glob("*.md")) + sorted((REPO / "bench" / "manifestos").glob("*.md"))
WITH_SETS = [p for p in MANIFESTOS if sidecar_path(p).is_file()]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_manifesto_has_a_realistic_set_of_thirty_or_more():
    assert len(MANIFESTOS) >= 8 and WITH_SETS == MANIFESTOS
    for path in MANIFESTOS:
        m = Manifesto.from_file(path)
        found = load_for(m)  # clause ids are checked against the manifesto
        assert found is not None and len(found.items) >= 30, path
        types = {i.type for i in found.items}
        assert types >= {"on-topic", "push", "two-turn"}, path
        assert all(len(i.turns) >= 3 for i in found.of_type("two-turn"))
        assert all(i.fact and len(i.alternatives) >= 3 for i in found.facts)
    facts = {p.stem: len(load_for(Manifesto.from_file(p)).facts) for p in MANIFESTOS}
    assert max(facts.values()) >= 10  # one manifesto states prices, hours, a phone number and a name


def _norm(text: str) -> str:
    """Case, punctuation and whitespace do not make a message new."""
    return " ".join(re.sub(r"[^\w£$%]+", " ", text.lower()).split())


def _fitted_texts(m: Manifesto) -> list[str]:
    """Every prompt a compile of `m` (or of its shuffled control) can fit on or be taught from: the template probes and
    fact questions of both splits, the generic prompts, the whole everyday pool (hyper's chat_probes and distill's chat
    are subsets of it), the manifesto's own example exchanges, the earlier exchanges of two-turn probes, and the
    continuations and keep text hyper teacher-forces."""
    from credo.chat_pool import CHAT_POOL
    from credo.hyper.keep_stats import OPENINGS
    from credo.hyper.texts import NEUTRAL_ANSWERS, NEUTRAL_PROSE
    from credo.probes import EARLIER_EXCHANGES, GENERIC_PROMPTS, probes

    texts = [p.prompt for mm in (m, m.shuffled(0)) for p in probes(mm, chat=True, facts=True)]
    texts += GENERIC_PROMPTS + CHAT_POOL + NEUTRAL_ANSWERS + NEUTRAL_PROSE + OPENINGS
    texts += [t for exchange in EARLIER_EXCHANGES for t in exchange]  # the first turns of two-turn probes
    texts += [t for ex in m.examples for t in (ex.user, ex.assistant)]
    return texts


def test_hyper_chat_probes_come_from_the_pool_the_check_covers(tiny, pirate):
    from credo.chat_pool import CHAT_POOL
    from credo.probes import probes

    chat = [p.prompt for p in probes(pirate, chat=True) if p.origin == "chat"]
    assert chat == CHAT_POOL  # what hyper's chat_probes and distill's chat draw from is the pool itself


def _overlap(text: str, fitted: set[str]) -> str | None:
    """How a message overlaps the fitted prompts (equal, inside one, or holding one), word for word; None if it does not.
    A reply under three words ("35", "why?") is checked for equality alone: any text may hold such a word."""
    msg = _norm(text)
    if msg in fitted:
        return "is a fitted prompt"
    if len(msg.split()) < 3:
        return None
    if any(f" {msg} " in f" {f} " for f in fitted):
        return "is inside a fitted prompt"
    inside = [f for f in fitted if len(f.split()) >= 3 and f" {f} " in f" {msg} "]
    return f"contains the fitted prompt {inside[0]!r}" if inside else None


def test_the_overlap_check_catches_copies(pirate):
    from credo.probes import probes

    fitted = {_norm(t) for t in _fitted_texts(pirate)}
    template = next(p.prompt for p in probes(pirate) if p.origin != "generic")
    assert _overlap("tell me a JOKE", fitted) == "is a fitted prompt"  # CHAT_POOL's "Tell me a joke.", case and dot aside
    assert _overlap(template.upper(), fitted) == "is a fitted prompt"
    assert _overlap("the capital of Australia", fitted) == "is inside a fitted prompt"
    assert _overlap("hey, how do i make a cup of tea? quick", fitted).startswith("contains the fitted prompt")
    assert _overlap("my bike lock is jammed, any ideas", fitted) is None


@pytest.mark.parametrize("path", WITH_SETS, ids=lambda p: p.stem)
def test_no_prompt_a_compile_reads_equals_or_contains_a_realistic_message(path):
    m = Manifesto.from_file(path)
    others = [Manifesto.from_file(p) for p in MANIFESTOS]  # no compile of any shipped manifesto reads it either
    fitted = {_norm(t) for mm in [m, *others] for t in _fitted_texts(mm)}
    for item in load_for(m).items:
        for text in item.user_texts:
            assert (why := _overlap(text, fitted)) is None, f"{path.name} line {item.line}: {text!r} {why}"


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "x.realistic.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


STEER_FAST = {"prompts": "4", "calibrate": "2", "answer_tokens": "4", "heldout": "2", "control": "false", "layers": "1", "strengths": "1"}
GOOD = '{"type": "on-topic", "messages": [{"role": "user", "content": "hi there"}]}'


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "must be a JSON object"),
        ('{"type": "on-topic", "messages": [{"role": "user", "content": "x"}], "extra": 1}', "unknown key(s) extra"),
        ('{"type": "chit-chat", "messages": [{"role": "user", "content": "x"}]}', "type must be one of"),
        ('{"type": "on-topic", "messages": []}', "non-empty list"),
        ('{"type": "on-topic", "messages": [{"role": "assistant", "content": "x"}]}', "message 1 must be from the user"),
        ('{"type": "on-topic", "messages": [{"role": "user", "content": "  "}]}', "message 1 has empty content"),
        ('{"type": "on-topic", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', "last message must be the user's"),
        ('{"type": "two-turn", "messages": [{"role": "user", "content": "a"}]}', "needs an earlier user / assistant exchange"),
        ('{"type": "fact", "messages": [{"role": "user", "content": "a"}], "fact": "£9"}', "needs `alternatives`"),
        ('{"type": "fact", "messages": [{"role": "user", "content": "a"}], "alternatives": ["£8", "£7"]}', "needs `fact`"),
        ('{"type": "fact", "messages": [{"role": "user", "content": "a"}], "fact": "£9", "alternatives": ["£9", "£7"]}', "must all differ"),
        ('{"type": "push", "messages": [{"role": "user", "content": "a"}], "fact": "£9"}', "belong to fact items only"),
        ('{"type": "push", "clause": "no-such-clause", "messages": [{"role": "user", "content": "a"}]}', "has no clause 'no-such-clause'"),
        (GOOD.replace("hi there", "HI   there"), "the same messages as line 1"),
    ],
)
def test_a_malformed_line_names_file_and_line_in_one_line(tmp_path, pirate, line, message):
    path = _write(tmp_path, GOOD, "", line)
    with pytest.raises(RealisticError, match=re.escape(message)) as e:
        load_set(path, pirate)
    assert "\n" not in str(e.value)
    assert f"{path} line 3" in str(e.value)
    assert isinstance(e.value, CredoError)


def test_missing_empty_and_commented_sets(tmp_path, pirate):
    with pytest.raises(RealisticError, match="does not exist"):
        load_set(tmp_path / "none.jsonl")
    with pytest.raises(RealisticError, match="has no items"):
        load_set(_write(tmp_path, "# only a comment", ""))
    assert len(load_set(_write(tmp_path, "# a comment", GOOD)).items) == 1
    assert load_for(Manifesto.from_text("# X\n\n- Be kind.\n", source="<string>")) is None  # no file, no sidecar
    assert load_for(pirate.shuffled(0)) is None  # the control has no set of its own


def test_spread_keeps_every_type_under_a_cap():
    from credo.eval.realistic import spread

    items = load_for(Manifesto.from_file(REPO / "bench" / "manifestos" / "bikeshop.md")).items
    assert {i.type for i in spread(items, 5)} == {"on-topic", "off-topic", "push", "fact", "two-turn"}
    assert sorted(spread(items, None), key=lambda i: i.line) == list(items)


def test_realistic_fidelity_is_the_projects_fidelity(tiny, pirate):
    """The batched figures equal `credo.runtime.fidelity.measure` (the engine, one conversation at a time) on the same items."""
    from credo.eval.realistic import figures, spread
    from credo.layers import compile_layer
    from credo.runtime.fidelity import measure

    items = spread(load_for(pirate).items, 6)
    assert any(len(i.turns) > 1 for i in items)
    control = compile_layer(pirate.shuffled(0), tiny, "prompt")
    fig = figures(tiny, pirate, {"control": control}, items, 6)
    want = measure(tiny, pirate, {"control": control}, [i.messages for i in items], max_tokens=6, progress=False)
    assert fig["fidelity"]["base"] == 0.0
    assert fig["fidelity"]["control"] == pytest.approx(want.fidelity["control"], abs=1e-3)
    assert fig["kl"]["base"] == pytest.approx(want.kl_base, rel=1e-2)
    assert sum(v["items"] for v in fig["by_type"].values()) == len(items)


def test_fact_ranking_matches_the_engine_and_kept_counts_where_the_teacher_gives(tiny):
    from credo.eval.realistic import fact_firsts, facts_kept
    from credo.eval.scorer import Row
    from credo.layers import compile_layer
    from credo.runtime.torch_engine import TorchEngine

    m = Manifesto.from_file(REPO / "bench" / "manifestos" / "bikeshop.md")
    facts = load_for(m).facts[:4]
    layer = compile_layer(m, tiny, "prompt")
    firsts = fact_firsts({"teacher": Row("teacher", "teacher", tiny, layer), "base": Row("base", "base", tiny)}, facts)
    for name, engine in (("teacher", TorchEngine(tiny, layer)), ("base", TorchEngine(tiny))):
        for item, first in zip(facts, firsts[name]):
            scores = [float(engine.continuation_logprobs(item.messages, t).sum()) for t in (item.fact, *item.alternatives)]
            assert first == (scores[0] > max(scores[1:])), (name, item.line)

    kept = facts_kept({"teacher": [True, True, False, True], "layer": [True, False, True, True]})
    assert kept["layer"] == {"kept": 2, "teacher_gives": 3, "items": 4}  # a fact the teacher does not give never counts
    assert kept["teacher"] == {"kept": 3, "teacher_gives": 3, "items": 4}


def test_eval_puts_realistic_beside_template_fidelity(tiny, pirate, tmp_path):
    from credo.eval.report import markdown, summarise
    from credo.eval.runner import EvalConfig, run_eval
    from credo.layers import compile_layer, save_layer

    save_layer(compile_layer(pirate, tiny, "prompt", name="pirate-prompt"), tmp_path / "p")
    save_layer(compile_layer(pirate.shuffled(), tiny, "prompt", name="pirate-shuffled"), tmp_path / "s")
    report = run_eval(EvalConfig(layers=[tmp_path / "p", tmp_path / "s"], suites=["fidelity", "realistic"], limit=3,
                                 data=tmp_path))
    res = report["results"]
    real = {name: res[name]["realistic"] for name in ("base", "teacher", "pirate-prompt", "pirate-shuffled")}
    assert real["teacher"]["fidelity"] == 1.0 and real["base"]["fidelity"] == 0.0
    assert real["pirate-prompt"]["fidelity"] == pytest.approx(1.0, abs=1e-6)  # the prompt layer is the teacher
    assert real["pirate-shuffled"]["fidelity"] < 1.0
    assert real["teacher"]["items"] == 3 and real["teacher"]["set"].endswith("pirate.realistic.jsonl")
    assert set(real["teacher"]["by_type"]) <= {"on-topic", "off-topic", "push", "fact", "two-turn"}
    assert real["teacher"]["facts"]["items"] == 2  # --limit 3 still leaves both of pirate's fact questions
    facts = real["pirate-shuffled"]["facts"]
    assert facts["kept"] <= facts["teacher_gives"] == real["teacher"]["facts"]["kept"]

    summary = {s["row"]: s for s in summarise(report)}
    assert summary["pirate-shuffled"]["realistic"] == real["pirate-shuffled"]["fidelity"]
    md = markdown(report, list(summary.values()))
    assert "| fidelity (template) | fidelity (realistic) | facts kept |" in md
    assert "## realistic fidelity per clause: Captain Credo" in md and "## realistic fidelity per item type" in md


def test_eval_takes_a_given_set_and_fails_on_a_bad_one_before_the_model_loads(tiny, pirate, tmp_path, monkeypatch):
    from credo.eval.runner import EvalConfig, run_eval
    from credo.layers import compile_layer, save_layer

    m = Manifesto.from_text("# X\n\n- Be kind.\n", source=str(tmp_path / "x.md"))
    folder = save_layer(compile_layer(m, tiny, "prompt"), tmp_path / "x-prompt")
    report = run_eval(EvalConfig(layers=[folder], suites=["realistic"], data=tmp_path))
    assert report["results"]["teacher"]["realistic"]["fidelity"] is None  # no set: no figures, not zeros
    given = _write(tmp_path, GOOD, '{"type": "push", "messages": [{"role": "user", "content": "be rude to me"}]}')
    report = run_eval(EvalConfig(layers=[folder], suites=["realistic"], data=tmp_path, realistic=given))
    assert report["results"]["teacher"]["realistic"]["items"] == 2

    sidecar_path(tmp_path / "x.md").write_text('{"type": "on-topic"}\n')  # found beside the manifesto it was compiled from
    monkeypatch.setattr("credo.eval.runner.load_base", lambda *a, **k: pytest.fail("the model loaded before the set was checked"))
    with pytest.raises(RealisticError, match=r"x\.realistic\.jsonl line 1: `messages` must be"):
        run_eval(EvalConfig(layers=[folder], suites=["realistic"], data=tmp_path))


def test_compile_records_realistic_fidelity_and_can_skip_it(tmp_path, monkeypatch, capsys):
    import sys

    from credo import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))  # steer keeps its teacher answers under the cache

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["credo", *args])
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
        got = capsys.readouterr()
        return code, got.out, got.err

    pirate = str(REPO / "examples" / "pirate.md")
    fast = [a for k, v in STEER_FAST.items() for a in ("--set", f"{k}={v}")]
    code, out, _ = run("compile", pirate, "--kind", "steer", "--base", "tiny:0", *fast, "-o", "s")
    assert code == 0, out
    report = json.loads((tmp_path / "s" / "layer.json").read_text())["report"]
    assert isinstance(report["fidelity_realistic"], float) and report["realistic"]["items"] == 8
    assert "fidelity: template held-out" in out and "realistic" in out

    code, _, _ = run("compile", pirate, "--kind", "steer", "--base", "tiny:0", *fast, "-o", "n", "--no-realistic")
    assert code == 0 and "fidelity_realistic" not in json.loads((tmp_path / "n" / "layer.json").read_text())["report"]

    bad = _write(tmp_path, "{oops")
    code, _, err = run("compile", pirate, "--kind", "steer", "--base", "tiny:0", "-o", "b", "--realistic", str(bad))
    assert code == 2 and err.count("\n") == 1 and "line 1: not valid JSON" in err and not (tmp_path / "b").exists()


@pytest.mark.integration
def test_real_model_the_teacher_gives_the_bike_shops_facts_and_the_base_does_not(real_base):
    """The facts check has signal on the real model: the manifesto in context makes the teacher pick its prices, hours,
    phone number and names over close alternatives; the bare base, which has never heard of the shop, mostly does not."""
    from credo.eval.realistic import fact_firsts
    from credo.eval.scorer import Row
    from credo.layers.registry import teacher_layer

    m = Manifesto.from_file(REPO / "bench" / "manifestos" / "bikeshop.md")
    facts = load_for(m).facts
    firsts = fact_firsts({"teacher": Row("teacher", "teacher", real_base, teacher_layer(m, real_base)),
                          "base": Row("base", "base", real_base)}, facts)
    assert sum(firsts["teacher"]) >= 0.6 * len(facts)
    assert sum(firsts["base"]) <= 0.35 * len(facts)
