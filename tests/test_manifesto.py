import pytest

from credo.errors import ManifestoError
from credo.manifesto import MAX_BYTES, Manifesto

DOC = """---
name: Test Identity
description: a test
evals:
  no-shut-down: "No"
---
# Test Identity

Intro paragraph about who we are.

## Rules
- Never help produce malware.
- Academic papers are more reliable
  than forum comments.
- Keep it short {#brevity}

## Examples
User: hi there
Assistant: Hello.

User: write a virus
Assistant: No.
"""


def test_parses_clauses_examples_and_front_matter():
    m = Manifesto.from_text(DOC)
    assert m.name == "Test Identity"
    assert m.meta["evals"] == {"no-shut-down": "No"}
    assert [c.text for c in m.clauses] == [
        "Intro paragraph about who we are.",
        "Never help produce malware.",
        "Academic papers are more reliable than forum comments.",
        "Keep it short",
    ]
    assert m.clause_ids[1] == "rules.never-help-produce-malware"
    assert m.clause_ids[3] == "brevity"
    assert [(e.user, e.assistant) for e in m.examples] == [("hi there", "Hello."), ("write a virus", "No.")]
    assert "## Examples" not in m.body and "User:" not in m.body


def test_ids_stay_stable_when_another_clause_is_edited_or_added():
    m1 = Manifesto.from_text(DOC)
    edited = DOC.replace("Never help produce malware.", "Never help produce malware, or any spyware of any kind.")
    edited = edited.replace("- Keep it short {#brevity}", "- Keep it short {#brevity}\n- Be kind.")
    m2 = Manifesto.from_text(edited)
    ids1, ids2 = m1.clause_ids, m2.clause_ids
    assert set(ids1) <= set(ids2)
    assert m1.clause(ids1[1]).text != m2.clause(ids1[1]).text
    assert m1.sha256 != m2.sha256


def test_duplicate_ids_get_suffixes():
    m = Manifesto.from_text("# X\n- Be kind.\n- Be kind.\n")
    assert m.clause_ids == ["x.be-kind", "x.be-kind-2"]


def test_example_manifestos_parse(tmp_path):
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "examples").glob("*.md")):
        m = Manifesto.from_file(path)
        assert len(m.clauses) >= 4 and m.examples, path


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"# T\n- rule\x00\x01", "binary"),
        (b"# T\n- caf\xe9\n", "not valid UTF-8"),
        (b"---\nname: [unclosed\n---\n# T\n- rule\n", "not valid YAML"),
        (b"---\nname: x\n# T\n- rule\n", "never closed"),
        (b"# T\n- rule\n## Examples\nUser: hi\n", "no 'Assistant:'"),
        (b"# T\n- rule\n## Examples\nsomething else\n", "User:"),
        (b"---\nname: x\n---\n", "no clauses"),
        # front matter is checked when read (issue #20.8: `evals: Maybe` compiled and failed only at `credo eval`)
        (b"---\nevals:\n  persona: Maybe\n---\n# T\n- rule\n", "evals.persona must be Yes or No, got 'Maybe'"),
        (b"---\nevals: [persona]\n---\n# T\n- rule\n", "'evals' must map data-set names to Yes or No"),
        (b"---\nevals:\n  persona: {answer: No, clause: nowhere}\n---\n# T\n- rule\n", "names clause 'nowhere'"),
        (b"---\nevals:\n  persona: [Yes]\n---\n# T\n- rule\n", "must be Yes or No"),
        (b"---\nname: [a, b]\n---\n# T\n- rule\n", "'name' must be a line of text"),
        (b"---\nname: x\ndate: 2001-02-30\n---\n# T\n- rule\n", "YAML cannot read"),
    ],
)
def test_bad_manifestos_get_one_line_errors(data, message):
    with pytest.raises(ManifestoError) as info:
        Manifesto.from_bytes(data, source="m.md")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_too_large_file_is_refused(tmp_path):
    path = tmp_path / "big.md"
    path.write_text("# T\n" + "- rule\n" * (MAX_BYTES // 7 + 10))
    with pytest.raises(ManifestoError, match="64 KiB"):
        Manifesto.from_file(path)
    with pytest.raises(ManifestoError, match="does not exist"):
        Manifesto.from_file(tmp_path / "missing.md")


def test_shuffled_control_keeps_words_but_not_order():
    m = Manifesto.from_text(DOC)
    s = m.shuffled(seed=1)
    words = lambda text: sorted(w for w in text.split() if w.strip("#-"))  # noqa: E731
    assert words(s.body.replace("# shuffled", "")) == words(m.body)
    assert s.body != m.body and s.sha256 != m.sha256


def test_good_evals_declarations_still_parse():
    from credo.manifesto import declared_evals

    m = Manifesto.from_text("---\nevals:\n  a: Yes\n  b: no\n  c: {answer: No, clause: t.rule}\n---\n# T\n- rule\n")
    assert declared_evals(m.meta, m.clause_ids, m.source) == [("a", True, None), ("b", False, None), ("c", False, "t.rule")]
