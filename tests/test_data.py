"""The data pipeline: clean, dedup, tag, ingest, recompile, and bad input, on small files built here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("datatrove")

from credo.data.errors import DataError, IngestError  # noqa: E402

PARA = (
    "The old stone bridge crosses the river at the narrowest point of the valley, where the water runs fast and cold. "
    "Farmers from the northern villages bring their cattle over it every spring, and the market in the square fills "
    "with bread, cheese and wool by the middle of the morning. Historians believe the first bridge here was built of "
    "timber, and that the present arches date from a rebuilding after the great flood of the fourteenth century. "
    "Today most visitors come for the view of the mountains from the parapet, and for the small museum in the tollhouse. "
    "The museum keeps the original toll boards, which list the price of crossing for a cart, a horse and a flock of sheep."
)
SENTENCES = [s.strip() + "." for s in PARA.split(".") if s.strip()]


def article(i: int) -> str:
    """A distinct, natural-looking paragraph: the shared sentences in a different order plus a unique one."""
    order = SENTENCES[i % len(SENTENCES):] + SENTENCES[: i % len(SENTENCES)]
    unique = f"In the year {1800 + i} the council of district number {i} voted to repair the road leading to parish {i * 7}."
    return " ".join(order[:3] + [unique] + order[3:])


def random_text(seed: int, n: int = 160) -> str:
    """Prose-like text from a seeded generator: different seeds share words but almost no 5-word runs."""
    import random

    rng = random.Random(seed)
    vocab = PARA.replace(",", "").replace(".", "").lower().split() + [f"w{k}" for k in range(300)]
    sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 16))).capitalize() + "." for _ in range(n // 12)]
    return " ".join(sentences)


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows]
    for at, raw in sorted((raw_lines or {}).items()):
        lines.insert(at, raw)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_out(out: Path) -> list[dict]:
    return [json.loads(x) for p in sorted((out / "data").glob("*.jsonl")) for x in p.read_text().splitlines()]


# --- junk rules -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,rule", [
    ("As an AI language model, I do not have opinions.", "ai-self-reference"),
    ("I'm just an AI assistant, so I can't say.", "ai-self-reference"),
    ("I cannot fulfill that request.", "refusal"),
    ("I’m sorry, but I can’t help with that.", "refusal"),
    ("That would violate my content policy.", "refusal"),
    ("As of my last knowledge update in September 2021, the tower stood.", "knowledge-cutoff"),
    ("I don't have real-time information about prices.", "knowledge-cutoff"),
    ("I am ChatGPT, a large language model trained by OpenAI.", "assistant-identity"),
])
def test_junk_rules_fire_on_assistant_phrases(text, rule):
    from credo.data.junk import find_junk

    hit = find_junk(text)
    assert hit is not None and hit[0].id == rule


@pytest.mark.parametrize("text", [
    "AI language models are studied by linguists and ethicists alike.",
    "The court refused the request and the company cannot appeal.",
    "Researchers at OpenAI and elsewhere published the results in 2021.",
    "Illegal dumping and racism were the council's main topics.",
    "I'm sorry I missed your call; I cannot make it on Friday.",
])
def test_junk_rules_spare_topic_words(text):
    from credo.data.junk import find_junk

    assert find_junk(text) is None


# --- clean --------------------------------------------------------------------------------------------------------

def test_clean_reports_rule_bad_lines_and_repairs_unicode(tmp_path):
    from credo.data.clean import run_clean

    rows = [{"id": f"g{i}", "text": article(i)} for i in range(4)]
    rows.append({"id": "junk", "text": "As an AI language model, I cannot browse. " + article(9)})
    rows.append({"id": "moji", "text": "The cafÃ© by the bridge opens early. " + article(10)})
    rows.append({"id": "short", "text": "Too short to be a document."})
    rows.append({"id": "notext", "body": "wrong field"})
    write_jsonl(tmp_path / "in" / "a.jsonl", rows, {2: '{"text": "broken'})
    report = run_clean(tmp_path / "in", tmp_path / "out", show=False)

    kept = {r["id"]: r for r in read_out(tmp_path / "out")}
    assert set(kept) == {"g0", "g1", "g2", "g3", "moji"}
    assert "café" in kept["moji"]["text"] and kept["moji"]["metadata"]["unicode_repaired"] is True
    reasons = report["removed_by_reason"]
    assert reasons["junk:ai-self-reference"]["examples"][0] == {"id": "junk", "matched": "As an AI language model"}
    assert reasons["gopher-quality:gopher_short_doc"]["count"] == 1
    bad = [json.loads(x) for x in (tmp_path / "out" / "bad-input.jsonl").read_text().splitlines()]
    assert [(b["file"], b["line"]) for b in bad] == [("a.jsonl", 3), ("a.jsonl", 9)]
    assert "broken JSON" in bad[0]["error"] and "'text'" in bad[1]["error"]
    removed = [json.loads(x) for p in (tmp_path / "out" / "removed").rglob("*.jsonl") for x in p.read_text().splitlines()]
    assert {r["id"] for r in removed} == {"junk", "short"}
    assert not list(tmp_path.glob(".out.credo-work"))  # work folder gone once OUT is committed


def test_clean_reads_parquet_and_text_folders(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from credo.data.clean import run_clean

    (tmp_path / "in" / "notes").mkdir(parents=True)
    pq.write_table(pa.table({"text": [article(1), "I cannot fulfill that request. " + article(2)], "id": ["p1", "p2"]}),
                   tmp_path / "in" / "part.parquet")
    (tmp_path / "in" / "notes" / "n1.txt").write_text(article(3), encoding="utf-8")
    (tmp_path / "in" / "notes" / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    report = run_clean(tmp_path / "in", tmp_path / "out", show=False)
    assert {r["id"] for r in read_out(tmp_path / "out")} == {"p1", "notes/n1.txt"}
    assert "junk:refusal" in report["removed_by_reason"]
    assert report["bad_input_first"][0]["file"] == "notes/bin.txt" and "UTF-8" in report["bad_input_first"][0]["error"]


def test_clean_refuses_existing_output_and_missing_input(tmp_path):
    from credo.data.clean import run_clean

    write_jsonl(tmp_path / "in.jsonl", [{"text": article(0)}])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists"):
        run_clean(tmp_path / "in.jsonl", tmp_path / "out", show=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(DataError, match="does not exist"):
        run_clean(tmp_path / "nope", tmp_path / "out2", show=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no JSONL"):
        run_clean(tmp_path / "empty", tmp_path / "out3", show=False)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_the_ray_executor_cleans_as_the_local_one_does(tmp_path):
    """The clean pipeline on a local Ray cluster of two CPUs, two tasks: the same kept, removed and bad-input rows as
    datatrove's local executor gives for the same input."""
    ray = pytest.importorskip("ray")
    from credo.data.clean import run_clean
    from credo.data.executor import RunConfig

    rows = [{"id": f"g{i}", "text": article(i)} for i in range(6)]
    rows.append({"id": "junk", "text": "As an AI language model, I cannot browse. " + article(9)})
    rows.append({"id": "moji", "text": "The cafÃ© by the bridge opens early. " + article(10)})
    rows.append({"id": "short", "text": "Too short to be a document."})
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[:5], {2: '{"text": "broken'})
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[5:])
    local = run_clean(tmp_path / "in", tmp_path / "local", RunConfig(tasks=2, workers=2), show=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_clean(tmp_path / "in", tmp_path / "ray", RunConfig(backend="ray", tasks=2), show=False)
    finally:
        ray.shutdown()
    assert remote == local and local["kept"] == 7 and local["bad_input_lines"] == 1
    assert read_out(tmp_path / "ray") == read_out(tmp_path / "local")
    for name in ("bad-input.jsonl", "removed"):
        files = {p.relative_to(tmp_path / "local"): p.read_text() for p in [tmp_path / "local" / name, *(tmp_path / "local" / name).rglob("*")] if p.is_file()}
        assert files and files == {p.relative_to(tmp_path / "ray"): p.read_text() for p in [tmp_path / "ray" / name, *(tmp_path / "ray" / name).rglob("*")]
                                   if p.is_file()}


def test_the_ray_executor_without_ray_says_how_to_install_it(monkeypatch):
    import importlib.util

    from credo.data.executor import RunConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(DataError, match="pip install ray"):
        RunConfig(backend="ray")


# --- dedup --------------------------------------------------------------------------------------------------------

def _near(text: str) -> str:
    words = text.split()
    words[20] = "granite"
    return " ".join(words)


def test_dedup_within_batch_and_against_index(tmp_path):
    from credo.data.dedup import run_dedup

    docs = [random_text(i) for i in range(12)]
    b1 = [{"id": f"a{i}", "text": t} for i, t in enumerate(docs[:8])]
    b1 += [{"id": "exact-a0", "text": "  " + docs[0].upper()}, {"id": "near-a1", "text": _near(docs[1])}]
    write_jsonl(tmp_path / "b1" / "x.jsonl", b1)
    r1 = run_dedup(tmp_path / "b1", tmp_path / "o1", tmp_path / "idx", show=False)
    assert {r["id"] for r in read_out(tmp_path / "o1")} == {f"a{i}" for i in range(8)}
    assert r1["removed_by_reason"]["dedup-exact"]["examples"] == [{"id": "exact-a0"}]
    assert r1["removed_by_reason"]["dedup-near"]["examples"] == [{"id": "near-a1"}]

    b2 = [{"id": "old-a2", "text": docs[2]}, {"id": "old-near-a3", "text": _near(docs[3])},
          {"id": "new8", "text": docs[8]}, {"id": "new9", "text": docs[9]}]
    write_jsonl(tmp_path / "b2" / "y.jsonl", b2)
    r2 = run_dedup(tmp_path / "b2", tmp_path / "o2", tmp_path / "idx", show=False)
    assert {r["id"] for r in read_out(tmp_path / "o2")} == {"new8", "new9"}
    assert r2["earlier_batches"] == 1 and r2["removed"] == 2
    batches = json.loads((tmp_path / "idx" / "batches.json").read_text())["batches"]
    assert [b["kept"] for b in batches] == [8, 2]
    assert not list((tmp_path / "idx").rglob("*.pkl"))

    with pytest.raises(DataError, match="already in the dedup index"):
        run_dedup(tmp_path / "b2", tmp_path / "o3", tmp_path / "idx", show=False)
    assert not (tmp_path / "o3").exists()


# --- tag ----------------------------------------------------------------------------------------------------------

def test_tag_from_options_fields_and_file_names(tmp_path):
    from credo.data.tag import run_tag

    write_jsonl(tmp_path / "in" / "news" / "2023-04-05.jsonl", [
        {"id": "n1", "text": "one"},
        {"id": "n2", "text": "two", "url": "https://Example.org/a", "date": "2020-02-03"},
    ])
    run_tag(tmp_path / "in", tmp_path / "auto", show=False)
    rows = {r["id"]: r for r in read_out(tmp_path / "auto")}
    assert list(rows["n1"]) == ["id", "text", "source", "added", "created", "metadata"]
    assert rows["n1"]["source"] == "news" and rows["n1"]["created"] == "2023-04-05T00:00:00Z"
    assert rows["n2"]["source"] == "example.org" and rows["n2"]["created"] == "2020-02-03T00:00:00Z"

    run_tag(tmp_path / "in", tmp_path / "given", source="wiki", date="2024-06", show=False)
    assert {(r["source"], r["created"]) for r in read_out(tmp_path / "given")} == {("wiki", "2024-06-01T00:00:00Z")}

    with pytest.raises(DataError, match="not a date"):
        run_tag(tmp_path / "in", tmp_path / "bad", date="last week", show=False)
    assert not (tmp_path / "bad").exists()


# --- ingest and recompile ------------------------------------------------------------------------------------------

def _tagged(tmp_path: Path) -> Path:
    rows = [{"id": str(i), "text": "the cat sat on the mat and the dog sat on the log. " * 2,
             "source": "example.org", "created": "2024-01-02T00:00:00Z", "metadata": {}} for i in range(6)]
    write_jsonl(tmp_path / "tagged" / "data" / "00000.jsonl", rows)
    return tmp_path / "tagged"




def test_ingest_trains_new_base_and_resumes_exactly(tmp_path, monkeypatch, one_thread):
    import credo.data.ingest as ingest
    from credo.base import load_base

    cfg = dict(steps=8, seq_len=16, batch_size=2, lr=3e-3, checkpoint_every=3)
    data = _tagged(tmp_path)
    meta = ingest.run_ingest(data, "tiny:0", tmp_path / "full", ingest.IngestConfig(**cfg), show=False)
    assert meta["ingest"]["loss_last"] < meta["ingest"]["loss_first"]
    assert meta["sha256"] != meta["parent_sha256"] == load_base("tiny:0").sha256
    assert meta["ingest"]["metadata_steps"] == 7  # MeCo: plain text for the last 10% (at least one step)
    assert load_base(str(tmp_path / "full")).sha256 == meta["sha256"]

    saved = ingest._save_checkpoint

    def crash_after_first_checkpoint(work, model, opt, state):
        saved(work, model, opt, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "_save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        ingest.run_ingest(data, "tiny:0", tmp_path / "resumed", ingest.IngestConfig(**cfg), show=False)
    assert not (tmp_path / "resumed").exists()
    monkeypatch.setattr(ingest, "_save_checkpoint", saved)
    with pytest.raises(IngestError, match="another input, base or settings"):
        ingest.run_ingest(data, "tiny:0", tmp_path / "resumed", ingest.IngestConfig(**{**cfg, "lr": 1e-3}), resume=True, show=False)
    again = ingest.run_ingest(data, "tiny:0", tmp_path / "resumed", ingest.IngestConfig(**cfg), resume=True, show=False)
    assert again["sha256"] == meta["sha256"]


def test_with_metadata_prefix():
    from credo.data.ingest import with_metadata

    assert with_metadata({"source": "a.org", "created": "2024-01-02T00:00:00Z"}, "x") == "Source: a.org\nDate: 2024-01-02\n\nx"
    assert with_metadata({}, "x") == "x"


def test_stale_layers_and_recompile_all(tmp_path):
    from credo.base import tiny_base
    from credo.data.recompile import recompile_all, stale_layers
    from credo.layers import compile_layer, save_layer
    from credo.layers.folder import read_info
    from credo.manifesto import Manifesto

    old, new = tiny_base(0), tiny_base(1)
    m = Manifesto.from_file(Path(__file__).parent.parent / "examples" / "terse.md")
    save_layer(compile_layer(m, old, "prompt", name="terse-prompt"), tmp_path / "layers" / "terse-prompt")
    assert [p.name for p, _ in stale_layers(tmp_path / "layers", new.sha256)] == ["terse-prompt"]
    assert stale_layers(tmp_path / "layers", old.sha256) == []
    results = recompile_all(tmp_path / "layers", new)
    assert [r.status for r in results] == ["recompiled"]
    assert read_info(tmp_path / "layers" / "terse-prompt").base["sha256"] == new.sha256
    assert [r.status for r in recompile_all(tmp_path / "layers", new)] == ["up to date"]


# --- CLI ----------------------------------------------------------------------------------------------------------

def test_cli_data_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from credo.cli import main; main()", "data", "tag", str(tmp_path / "nope"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- robustness: overlapping and foreign outputs, truncated input, Ctrl-C, resuming ------------------------------------

def _marker(out: Path) -> dict:
    return json.loads((out / ".credo-data.json").read_text())


def test_an_output_that_overlaps_the_input_is_refused_even_with_force(tmp_path):
    """Issue #20.1: `clean p/raw p --force` (the output holds the input) deleted p/raw and everything else in p."""
    from credo.data.clean import run_clean

    write_jsonl(tmp_path / "p" / "raw" / "a.jsonl", [{"id": "a", "text": article(0)}])
    (tmp_path / "p" / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for inp, out in [("p/raw", "p"), ("p/raw", "p/raw"), ("p/raw", "p/raw/out"), ("p/raw/a.jsonl", "p/raw/a.jsonl")]:
        with pytest.raises(DataError, match="overlap"):
            run_clean(tmp_path / inp, tmp_path / out, force=True, show=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    run_clean(tmp_path / "p" / "raw" / "a.jsonl", tmp_path / "p" / "clean", show=False)  # a file beside its output is fine
    assert {r["id"] for r in read_out(tmp_path / "p" / "clean")} == {"a"}


def test_force_replaces_only_an_output_credo_wrote(tmp_path):
    from credo.data.clean import run_clean
    from credo.data.dedup import run_dedup
    from credo.data.ingest import IngestConfig, run_ingest

    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": article(0)}])
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not written by credo"):
        run_clean(tmp_path / "in.jsonl", tmp_path / "out", force=True, show=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine" and (tmp_path / "out" / "sub").is_dir()
    with pytest.raises(IngestError, match="credo did not write it"):
        run_ingest(_tagged(tmp_path), "tiny:0", tmp_path / "out", IngestConfig(steps=1), force=True, show=False)
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="overlap"):  # the index inside OUT would go with it
        run_dedup(tmp_path / "in.jsonl", tmp_path / "o2", tmp_path / "o2" / "idx", show=False)

    run_clean(tmp_path / "in.jsonl", tmp_path / "mine", show=False)
    first = _marker(tmp_path / "mine")
    assert first["stage"] == "clean"
    run_clean(tmp_path / "in.jsonl", tmp_path / "mine", force=True, show=False)  # credo's own output: replaced
    assert _marker(tmp_path / "mine")["run"] != first["run"]
    assert not list(tmp_path.glob(".*credo-work"))


def test_a_truncated_gzip_is_bad_input_and_the_documents_before_it_are_kept(tmp_path):
    """Issue #20.5: a truncated .jsonl.gz crashed clean with EOFError and left its work folder."""
    import gzip

    from credo.data.clean import run_clean

    rows = [json.dumps({"id": f"d{i}", "text": article(i)}) for i in range(60)]
    data = gzip.compress(("\n".join(rows) + "\n").encode())
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.jsonl.gz").write_bytes(data[: len(data) * 2 // 3])
    write_jsonl(tmp_path / "in" / "whole.jsonl", [{"id": "w", "text": article(99)}])
    report = run_clean(tmp_path / "in", tmp_path / "out", quality=False, show=False)
    kept = [r["id"] for r in read_out(tmp_path / "out")]
    (bad,) = [json.loads(x) for x in (tmp_path / "out" / "bad-input.jsonl").read_text().splitlines()]
    assert bad["file"] == "cut.jsonl.gz" and "EOFError" in bad["error"] and "truncated" in bad["error"]
    n = bad["line"] - 1  # the documents before the line it broke at
    assert 0 < n < 60 and kept == [f"d{i}" for i in range(n)] + ["w"] and report["bad_input_lines"] == 1
    assert not list(tmp_path.glob(".*credo-work"))


def test_a_work_folder_resumes_only_the_command_it_belongs_to(tmp_path):
    from credo.data.tag import run_tag
    from credo.data.workspace import Workspace

    write_jsonl(tmp_path / "a.jsonl", [{"id": "a", "text": "one"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "b", "text": "two"}])
    ws = Workspace(tmp_path / "out", command={"stage": "tag", "input": "someone else's"})  # an interrupted run of another command
    ws.check(tmp_path / "a.jsonl")
    ws.begin(added="2020-01-01T00:00:00Z")
    with pytest.raises(DataError, match="interrupted run of another command"):
        run_tag(tmp_path / "b.jsonl", tmp_path / "out", show=False)
    run_tag(tmp_path / "b.jsonl", tmp_path / "out", force=True, show=False)  # --force starts this one over
    rows = read_out(tmp_path / "out")
    assert [r["id"] for r in rows] == ["b"] and rows[0]["added"] != "2020-01-01T00:00:00Z"


def _sigint_default() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's background job ignores SIGINT, and children inherit that


def test_ctrl_c_exits_130_says_how_to_resume_and_the_rerun_finishes(tmp_path):
    """Issue #20.3: an interrupted dedup exited 0 with no message, so `a && b` went on."""
    import signal
    import time

    from credo.data.dedup import run_dedup

    for f in range(4):
        write_jsonl(tmp_path / "in" / f"p{f}.jsonl", [{"id": f"d{f}-{i}", "text": random_text(f * 1000 + i)} for i in range(150)])
    run_dedup(tmp_path / "in", tmp_path / "ref", tmp_path / "ref-index", show=False)
    work = tmp_path / ".out.credo-work"
    cmd = [sys.executable, "-m", "credo.cli", "data", "dedup", str(tmp_path / "in"), str(tmp_path / "out"), "--index", str(tmp_path / "idx")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default)
    deadline = time.monotonic() + 60
    while not (work / "logs").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0 and (tmp_path / "out" / "report.json").is_file():
        pytest.skip("the run finished before the interrupt landed")
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: run the same command again to resume") and "Traceback" not in err
    assert not (tmp_path / "out").exists() and work.is_dir()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert read_out(tmp_path / "out") == read_out(tmp_path / "ref") and not work.exists()


# Runs `credo data dedup` with Ctrl-C sent right after the Nth stage's multiprocess Manager server has started, before
# the Manager registers its finalizer: the window a loaded machine hit by chance, made certain here (test-only patch).
_CTRL_C_AT_MANAGER = """
import os, signal, sys
import multiprocess.process as mp

nth, seen, start = int(sys.argv[1]), [0], mp.BaseProcess.start

def start_then_ctrl_c(self):
    start(self)
    if self.name.startswith("SyncManager"):
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGINT)

mp.BaseProcess.start = start_then_ctrl_c
sys.argv = ["credo"] + sys.argv[2:]
from credo.cli import entry
entry()
"""


@pytest.mark.parametrize("stage", [1, 6])  # exact-signatures (first), filter (last: where the loaded machine hung)
def test_ctrl_c_while_a_stage_starts_its_workers_exits_instead_of_hanging(tmp_path, stage):
    """Issue: Ctrl-C as a stage started left datatrove's Manager server orphaned, and the exit waited on it forever."""
    from credo.data.dedup import run_dedup

    for f in range(2):
        write_jsonl(tmp_path / "in" / f"p{f}.jsonl", [{"id": f"d{f}-{i}", "text": random_text(f * 1000 + i)} for i in range(40)])
    run_dedup(tmp_path / "in", tmp_path / "ref", tmp_path / "ref-index", show=False)
    args = ["data", "dedup", str(tmp_path / "in"), str(tmp_path / "out"), "--index", str(tmp_path / "idx")]
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C_AT_MANAGER, str(stage), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_default, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGKILL)  # the group: an orphaned worker would hold the pipes open
        proc.communicate(timeout=10)
        pytest.fail(f"Ctrl-C as stage {stage} started its workers: still running after 60 s")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted: run the same command again to resume"), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    rerun = subprocess.run([sys.executable, "-m", "credo.cli", *args], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert read_out(tmp_path / "out") == read_out(tmp_path / "ref") and not (tmp_path / ".out.credo-work").exists()


def test_a_resumed_tag_run_keeps_its_first_timestamp(tmp_path, monkeypatch):
    import credo.data.tag as tag
    from credo.data import executor

    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": "one"}])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": "b", "text": "two"}])
    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(executor, "_executor", ctrl_c)
        with pytest.raises(KeyboardInterrupt, match="run the same command again to resume"):
            tag.run_tag(tmp_path / "in", tmp_path / "out", show=False)
    first = json.loads((tmp_path / ".out.credo-work" / "run.json").read_text())["added"]
    import time

    time.sleep(1.1)  # a fresh start would stamp another second
    report = tag.run_tag(tmp_path / "in", tmp_path / "out", show=False)
    assert report["added"] == first and {r["added"] for r in read_out(tmp_path / "out")} == {first}
