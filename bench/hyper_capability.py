"""Capability kept by `hyper`, paired: HellaSwag item by item against the bare base, and perplexity on neutral text.

bench/hyper.py's eval runs HellaSwag at the suite's 10 items, which cannot resolve a 2% change. Here every row answers
the same `--items` items, so the difference to the base is taken item by item, with its paired standard error
(sqrt of the discordant share over n). Perplexity is over `--texts` neutral texts (the eval's perplexity suite).

    .venv/bin/python bench/hyper_capability.py --threads 2 [examples/honest.md ...] [--items 200] [--texts 40]

Results go to bench/results/hyper-capability-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from credo.eval.paired import Z, paired

REPO = Path(__file__).resolve().parent.parent


def hellaswag_items(data: Path, n: int) -> list[tuple[str, list[str], int]]:
    """The eval's HellaSwag items, `n` of them spread over the file."""
    from credo.eval.suites.base import SuiteContext
    from credo.eval.suites.capability import HellaSwag

    suite = HellaSwag(SuiteContext(data=data, size=n))
    suite.load([])
    return suite.items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifestos", nargs="*", type=Path)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--texts", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="key=value hyper setting")
    args = ap.parse_args()
    if args.items < 2:
        ap.error("--items must be at least 2 (a paired interval needs two items)")
    torch.set_num_threads(args.threads)

    from credo.base import load_base
    from credo.eval.data import default_data_dir
    from credo.eval.scorer import Row
    from credo.eval.suites.capability import choice_hits, neutral_texts, perplexity
    from credo.layers import compile_layer
    from credo.manifesto import Manifesto
    from credo.runtime.precision import machine_header

    machine, machine_line = machine_header()
    print(machine_line, flush=True)
    paths = args.manifestos or sorted((REPO / "examples").glob("*.md"))
    settings = dict(s.split("=", 1) for s in args.set)
    data = default_data_dir()
    items, texts = hellaswag_items(data, args.items), neutral_texts(data, args.texts)
    base = load_base()
    rows = {"base": Row("base", "base", base)} | {
        p.stem: Row(p.stem, "layer", base, compile_layer(Manifesto.from_file(p), base, "hyper", settings)) for p in paths}
    hits = {name: choice_hits(row, items, progress=True) for name, row in rows.items()}
    ppl = {name: perplexity(row, texts)["perplexity"] for name, row in rows.items()}
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threads": args.threads, "machine": machine, "settings": settings,
           "items": len(items), "texts": len(texts), "rows": {}}
    lines = [f"# hyper capability, paired ({out['when']}, {len(items)} HellaSwag items, {len(texts)} neutral texts, "
             f"settings {settings or 'defaults'})", "", machine_line, "",
             "| row | HellaSwag | vs base (paired SE) | perplexity | vs base |", "| --- | --- | --- | --- | --- |"]
    for name in rows:
        acc = sum(hits[name]) / len(items)
        diff, half = paired([int(h) for h in hits[name]], [int(b) for b in hits["base"]])
        se = half / Z  # the table shows the standard error, as before
        out["rows"][name] = {"accuracy": acc, "diff": diff, "paired_se": se, "perplexity": ppl[name]}
        lines.append(f"| {name} | {acc:.3f} | {diff:+.3f} ({se:.3f}) | {ppl[name]:.3f} | {ppl[name] / ppl['base'] - 1:+.1%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = REPO / "bench" / "results"
    (results / f"hyper-capability-{stamp}.md").write_text(text)
    (results / f"hyper-capability-{stamp}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
