"""What compiles fit on (`credo.probes`): fact questions that leave the fact out, and second turns that keep their split."""

from __future__ import annotations

from credo.manifesto import Manifesto
from credo.probes import EARLIER_EXCHANGES, FACT_TEMPLATES, fact_prompts, probes, second_turns

SHOP = """# Shop
- The shop is open Tuesday to Saturday, 9am to 6pm. {#hours}
- A puncture repair costs £12; a deposit of £100 is taken for hire bikes. {#prices}
- Maggie Thorne owns it.
- Be friendly and practical.
## Examples
User: Do you fix kids' bikes?
Assistant: We do! Bring it in any day we are open.
"""


def test_fact_questions_stop_before_each_fact_and_never_state_it():
    m = Manifesto.from_text(SHOP, source="shop.md")
    by_id = {c.id: fact_prompts(c) for c in m.clauses}
    assert by_id["hours"] == [t.format(lead="the shop is open") for t in FACT_TEMPLATES]  # "Tuesday" is where the fact starts
    assert len(by_id["prices"]) == 2 * len(FACT_TEMPLATES)  # one lead per sentence that states a fact
    assert any("a deposit of" in p for p in by_id["prices"])
    for prompts in by_id.values():
        assert not any(fact in p for p in prompts for fact in ("9am", "£12", "£100", "Tuesday", "Maggie"))
    friendly = next(c for c in m.clauses if c.text.startswith("Be friendly"))
    assert fact_prompts(friendly) == []  # no fact, no question; a fact with no lead-in ("Maggie Thorne owns it") neither
    assert not any("owns" in p for ps in by_id.values() for p in ps)


def test_fact_probes_are_added_only_when_asked_and_split_like_the_rest():
    m = Manifesto.from_text(SHOP, source="shop.md")
    plain, with_facts = probes(m), probes(m, facts=True)
    added = [p for p in with_facts if p not in plain]
    assert len(added) == 3 * len(FACT_TEMPLATES) and all(p.origin in ("hours", "prices") for p in added)
    assert [p for p in with_facts if p in plain] == plain
    assert {p.heldout for p in probes(m, facts=True, heldout_share=0.5)} == {True, False}


def test_second_turns_follow_an_earlier_exchange_and_keep_their_split():
    m = Manifesto.from_text(SHOP, source="shop.md")
    ps = [p for p in probes(m) if p.origin != "example"]
    turns = second_turns(m, ps, 5)
    assert len(turns) == 5 and len({p.prompt for p in turns}) == 5
    assert turns[0].history == ((m.examples[0].user, m.examples[0].assistant),)  # the manifesto's own exchange first
    assert turns[1].history == (EARLIER_EXCHANGES[0],)
    for t in turns:
        plain = next(p for p in ps if p.prompt == t.prompt)
        assert (t.heldout, t.origin) == (plain.heldout, plain.origin)
        assert [x["role"] for x in t.messages] == ["user", "assistant", "user"] and t.messages[-1]["content"] == t.prompt
    assert second_turns(m, ps, 0) == [] and len(second_turns(m, ps, 10_000)) == len(ps)
