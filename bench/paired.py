"""Paired differences from the base in `credo eval` reports: what a row changed, item by item, with 95% intervals.

Every row of a report answers the same items, so a row's difference from the base is measured on each item and its
interval is set by the items the two disagree on, not by the spread of either accuracy: far tighter than two
independent accuracies (a 2-point change needs ~4,500 unpaired HellaSwag items, often a few hundred paired).

- HellaSwag, MMLU (per-item hits): accuracy, the difference from the base in points ± its paired interval, the share
  of items the two disagree on, and the items a ±2-point interval would take at that disagreement;
- sycophancy (per-item shifts, reports from 12-07 on): the shift (the mean rise in P(the user's view) that the user's
  biography causes) and its difference from the base's.

    .venv/bin/python bench/paired.py REPORT_FOLDER [...] [--out bench/RESULTS-paired.md --title "..." --note "..."]

The reports come from runs such as `credo eval --layers L1 --layers L2 --suites hellaswag --size 1000 -o OUT`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from credo.eval.paired import Z, paired, shifts

CAPABILITY = ("hellaswag", "mmlu")


def rows_of(report: dict) -> list[str]:
    twins = {b for pair in report.get("twins", []) for b in pair[1:]}  # scored once: the first of each pair stands
    return [r["name"] for r in report["rows"] if r["name"] not in twins]


def capability_lines(report: dict, suite: str) -> list[str]:
    res, names = report["results"], rows_of(report)
    base = res.get("base", {}).get(suite)
    if not base or not base.get("hits"):
        return []
    n = len(base["hits"])
    lines = [f"### {suite}: {n} items per row, paired with the base", "",
             "| row | accuracy | − base, points (95%) | items disagreeing | items for ±2 points |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in names:
        m = res[name].get(suite)
        if not m or len(m.get("hits", [])) != n:
            continue
        if name == "base":
            lines.append(f"| base | {m['accuracy']:.3f} | — | — | — |")
            continue
        mean, half = paired(m["hits"], base["hits"])
        var = statistics.pvariance([a - b for a, b in zip(m["hits"], base["hits"])])
        disagree = sum(a != b for a, b in zip(m["hits"], base["hits"])) / n
        need = math.ceil(var * (Z / 0.02) ** 2) if var else 0
        lines.append(f"| {name} | {m['accuracy']:.3f} | {100 * mean:+.1f} ± {100 * half:.1f} | {disagree:.0%} | {need} |")
    return lines + [""]


def sycophancy_lines(report: dict) -> list[str]:
    res, names = report["results"], rows_of(report)
    base = shifts(res.get("base", {}).get("sycophancy"))
    if len(base) < 2:
        return []
    lines = [f"### sycophancy: {len(base)} items per row, paired with the base", "",
             "| row | rate | shift | shift − base (95%) |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        m = res[name].get("sycophancy")
        own = shifts(m)
        if len(own) != len(base):
            continue
        diff = "—" if name == "base" else "{:+.3f} ± {:.3f}".format(*paired(own, base))
        lines.append(f"| {name} | {m['sycophancy']:.2f} | {statistics.fmean(own):+.3f} | {diff} |")
    return lines + [""]


def markdown(folders: list[Path]) -> str:
    out = []
    for folder in folders:
        report = json.loads((folder / "report.json").read_text())
        out += [f"## {folder.name} (base {report['base']['name']}, {report['base']['sha256'][:12]})", ""]
        for suite in CAPABILITY:
            out += capability_lines(report, suite)
        out += sycophancy_lines(report)
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="credo eval output folders (each with report.json)")
    ap.add_argument("--out", type=Path, help="write the tables here too (a results file), under --title")
    ap.add_argument("--title", default="Paired differences from the base")
    ap.add_argument("--note", default="", help="a paragraph under the title: the runs' commands and machine")
    args = ap.parse_args()
    text = markdown(args.reports)
    print(text)
    if args.out:
        from credo.fsutil import write_text_atomic

        write_text_atomic(args.out, f"# {args.title}\n\n" + (f"{args.note}\n\n" if args.note else "") + text)


if __name__ == "__main__":
    main()
