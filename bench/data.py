"""Benchmark of `credo data`: documents/s per stage, and precision/recall of the junk filter and of dedup.

A corpus of N generated documents (default 100k, in 4 JSONL shards) is planted with assistant junk (3%), exact
duplicates (1%) and near duplicates (3%, ~3% of words changed); clean documents include hard negatives (text about
AI, human refusals). The same clean filters are also run in a plain Python loop for comparison.

    .venv/bin/python bench/data.py [--docs 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

JUNK = [
    "As an AI language model, I cannot form personal opinions about this.",
    "As an AI, I don't have feelings about the matter.",
    "I'm sorry, but I can't help with that request.",
    "I’m sorry, but I cannot provide that information.",
    "I cannot fulfill that request.",
    "I apologize, but I am unable to assist with this.",
    "As of my last knowledge update in September 2021, this was the case.",
    "My knowledge cutoff means I may not know recent events.",
    "I don't have real-time information, so please check a current source.",
    "I am an AI assistant and cannot browse websites.",
    "That would violate my content policy, so I must decline.",
    "I must respectfully decline to answer this request.",
    "I am ChatGPT, a large language model trained by OpenAI.",
    "As a large language model, I have no access to your files.",
]
HARD_NEGATIVES = [
    "AI language models are now studied by linguists and by historians of technology.",
    "The court refused the request, and the company said it cannot appeal before March.",
    "Researchers at OpenAI and at several universities published the results last year.",
    "I'm sorry I missed your call; I cannot make it to the meeting on Friday.",
    "The assistant manager declined to comment on the new opening hours.",
    "Debates about ethics, illegal dumping and racism filled the evening session.",
]
STOP = "the of and to in a is that for it as was with on by at from this be or an are".split()


def make_vocab(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(4000)}
    return sorted(words)


def sentence(rng: random.Random, vocab: list[str]) -> str:
    words = [rng.choice(STOP) if rng.random() < 0.35 else rng.choice(vocab) for _ in range(rng.randint(9, 18))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "!", "?"])


def document(rng: random.Random, vocab: list[str]) -> str:
    paras = []
    for _ in range(rng.randint(2, 4)):
        paras.append(" ".join(sentence(rng, vocab) for _ in range(rng.randint(3, 6))))
    return "\n\n".join(paras)


def near_copy(rng: random.Random, text: str, vocab: list[str], rate: float = 0.01) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(len(words) * rate))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def generate(folder: Path, n: int, seed: int = 0) -> dict[str, set[str]]:
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    planted: dict[str, set[str]] = {"junk": set(), "exact": set(), "near": set(), "hard_negative": set()}
    originals: list[tuple[str, str]] = []
    groups: dict[str, set[str]] = {}  # original id -> its planted copies
    shards = [open(folder / f"shard-{k}.jsonl", "w", encoding="utf-8") for k in range(4)]
    for i in range(n):
        doc_id = f"d{i:06d}"
        r = rng.random()
        if r < 0.03:
            text = document(rng, vocab)
            sents = text.split(". ")
            pos = rng.randrange(len(sents))
            sents.insert(pos, rng.choice(JUNK).rstrip("."))
            text = ". ".join(sents)
            planted["junk"].add(doc_id)
        elif r < 0.04 and originals:
            orig_id, orig = rng.choice(originals)
            text = "  " + orig.replace(" ", "  ", 3) + "\n"
            planted["exact"].add(doc_id)
            groups.setdefault(orig_id, {orig_id}).add(doc_id)
        elif r < 0.07 and originals:
            orig_id, orig = rng.choice(originals)
            text = near_copy(rng, orig, vocab)
            planted["near"].add(doc_id)
            groups.setdefault(orig_id, {orig_id}).add(doc_id)
        else:
            text = document(rng, vocab)
            if rng.random() < 0.05:
                text = text + " " + rng.choice(HARD_NEGATIVES)
                planted["hard_negative"].add(doc_id)
            if len(originals) < 20000:
                originals.append((doc_id, text))
        shards[i % 4].write(json.dumps({"id": doc_id, "text": text}) + "\n")
    for f in shards:
        f.close()
    planted["groups"] = groups  # type: ignore[assignment]
    return planted


def removed_ids(out: Path, prefix: str) -> set[str]:
    ids = set()
    for p in (out / "removed").glob(f"{prefix}*/*.jsonl"):
        ids |= {json.loads(x)["id"] for x in p.read_text().splitlines()}
    return ids


def pr(found: set[str], truth: set[str]) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


def plain_loop(folder: Path, out: Path) -> float:
    """The clean filters (ftfy, junk rules, Gopher/C4/FineWeb) in a plain Python loop, one process, same output."""
    import ftfy
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    from credo.data.junk import find_junk
    from credo.data.words import OFFLINE

    filters = [GopherQualityFilter(language=OFFLINE), GopherRepetitionFilter(language=OFFLINE),
               C4QualityFilter(language=OFFLINE, filter_no_terminal_punct=False), FineWebQualityFilter(language=OFFLINE)]
    out.mkdir(parents=True)
    t = time.perf_counter()
    n = 0
    with open(out / "kept.jsonl", "w", encoding="utf-8") as w:
        for p in sorted(folder.glob("*.jsonl")):
            for line in open(p, encoding="utf-8"):
                rec = json.loads(line)
                n += 1
                doc = Document(text=ftfy.fix_text(rec["text"]), id=rec["id"])
                if find_junk(doc.text):
                    continue
                if all(f.filter(doc) is True for f in filters):
                    w.write(json.dumps({"id": doc.id, "text": doc.text}) + "\n")
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    from credo.data.clean import run_clean
    from credo.data.dedup import run_dedup
    from credo.data.executor import RunConfig
    from credo.data.tag import run_tag
    from credo.runtime.precision import machine_header

    print(machine_header()[1])

    tmp = Path(tempfile.mkdtemp(prefix="credo-bench-data-"))
    corpus = tmp / "corpus"
    corpus.mkdir()
    t = time.perf_counter()
    planted = generate(corpus, args.docs)
    print(f"generated {args.docs} documents in {time.perf_counter() - t:.1f}s: "
          + ", ".join(f"{k} {len(v)}" for k, v in planted.items()))

    cfg1 = RunConfig(tasks=4, workers=1)
    cfgw = RunConfig(tasks=4, workers=args.workers)
    results = {}

    t = time.perf_counter()
    rep = run_clean(corpus, tmp / "clean", cfg1, show=False)
    results["clean (datatrove, 1 worker)"] = args.docs / (time.perf_counter() - t)
    if args.workers > 1:
        t = time.perf_counter()
        run_clean(corpus, tmp / "clean-w", cfgw, show=False)
        results[f"clean (datatrove, {args.workers} workers)"] = args.docs / (time.perf_counter() - t)
    results["clean (plain Python loop)"] = plain_loop(corpus, tmp / "loop")

    n_clean = rep["kept"]
    t = time.perf_counter()
    drep = run_dedup(tmp / "clean" / "data", tmp / "dedup", tmp / "index", cfg1, show=False)
    results["dedup (datatrove, 1 worker)"] = n_clean / (time.perf_counter() - t)

    t = time.perf_counter()
    run_tag(tmp / "dedup" / "data", tmp / "tagged", source="bench.example", date="2024-05-01", cfg=cfg1, show=False)
    results["tag (datatrove, 1 worker)"] = drep["kept"] / (time.perf_counter() - t)

    junk_found = removed_ids(tmp / "clean", "junk")
    jp, jr = pr(junk_found, planted["junk"])
    reached = {json.loads(x)["id"] for p in (tmp / "clean" / "data").glob("*.jsonl") for x in p.read_text().splitlines()}
    # a planted group (original + copies) that reached dedup should lose all but one member; which one datatrove keeps
    # is its choice, so score per group: removed members of a group are correct, up to len(group) - 1 of them
    dup_found = removed_ids(tmp / "dedup", "dedup")
    member_of = {m: g for g, ms in planted["groups"].items() for m in ms}
    tp = want = 0
    for g, ms in planted["groups"].items():
        alive = ms & reached
        if len(alive) > 1:
            want += len(alive) - 1
            tp += min(len(alive & dup_found), len(alive) - 1)
    dp = tp / len(dup_found) if dup_found else 1.0
    dr = tp / want if want else 1.0
    dup_truth = {m for m in member_of if m in reached}
    exact_found = removed_ids(tmp / "dedup", "dedup-exact")
    ep = len(exact_found & set(member_of)) / len(exact_found) if exact_found else 1.0
    er = len(exact_found) / max(1, len(planted["exact"] & reached))
    hard_lost = len(planted["hard_negative"] & junk_found)

    print(f"\nclean kept {rep['kept']} of {args.docs}; removed by reason: "
          + ", ".join(f"{k} {v['count']}" for k, v in rep["removed_by_reason"].items()))
    print(f"dedup kept {drep['kept']} of {n_clean}; removed: "
          + ", ".join(f"{k} {v['count']}" for k, v in drep["removed_by_reason"].items()))
    print("\nthroughput (documents/s, input documents of each stage):")
    for k, v in results.items():
        print(f"  {k:34s} {v:10.0f}")
    base = results["clean (plain Python loop)"]
    print(f"  clean datatrove / plain loop (1 worker): {results['clean (datatrove, 1 worker)'] / base:.2f}x")
    if args.workers > 1:
        print(f"  clean datatrove / plain loop ({args.workers} workers): {results[f'clean (datatrove, {args.workers} workers)'] / base:.2f}x")
    print("\nquality on planted items (targets: precision >= 0.98, recall >= 0.95):")
    print(f"  junk filter   precision {jp:.4f}  recall {jr:.4f}  (planted {len(planted['junk'])}, removed by junk rules {len(junk_found)}, "
          f"hard negatives lost {hard_lost}/{len(planted['hard_negative'])})")
    print(f"  dedup (all)   precision {dp:.4f}  recall {dr:.4f}  (planted group members reaching dedup {len(dup_truth)}, "
          f"removals expected {want}, removed {len(dup_found)})")
    print(f"  dedup exact   precision {ep:.4f}  share of planted exact copies removed as exact {er:.4f}")
    if args.keep:
        print(f"\nfiles kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
