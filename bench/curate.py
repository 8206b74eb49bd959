"""Curate bench/results/ into bench/RESULTS.md: the latest run of each benchmark, one section each.

Raw output piles up in bench/results/ (not tracked); this keeps one table per benchmark that a reader can trust to
be current. What each setting was tried at lives in docs/tuning.md, not here.

    .venv/bin/python bench/curate.py            # or: make results
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN = re.compile(r"^(?P<name>.+)-(?P<date>\d{8})-(?P<time>\d{6})\.(?P<ext>md|json)$")


def latest_runs(results: Path) -> dict[str, dict[str, Path]]:
    """Per benchmark name, the files ({ext: path}) of its newest run; names without a run stamp are skipped."""
    runs: dict[str, dict[str, dict[str, Path]]] = {}
    for path in sorted(results.iterdir()):
        m = RUN.match(path.name)
        if m and path.is_file():
            runs.setdefault(m["name"], {}).setdefault(m["date"] + m["time"], {})[m["ext"]] = path
    return {name: stamps[max(stamps)] for name, stamps in sorted(runs.items())}


def machine_lines(text: str, data: dict | None) -> list[str]:
    lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.startswith("machine:")))
    if not lines and data:
        line = data.get("machine_line") or ""
        lines = [line] if line.startswith("machine:") else []
    return lines


def demote(body: str) -> str:
    """Headings two levels down, so each run nests under its benchmark's section; everything else as written."""
    out, fence = [], False
    for line in body.splitlines():
        fence ^= line.lstrip().startswith("```")
        out.append("##" + line if not fence and line.startswith("#") else line)
    return "\n".join(out)


def section(name: str, files: dict[str, Path]) -> str:
    any_file = next(iter(files.values()))
    stamp = RUN.match(any_file.name)
    when = datetime.strptime(stamp["date"] + stamp["time"], "%Y%m%d%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
    data = None
    if "json" in files:
        try:
            data = json.loads(files["json"].read_text())
        except (ValueError, UnicodeDecodeError):
            data = None
    text = files["md" if "md" in files else "json"].read_text().strip()
    machines = machine_lines(text, data if isinstance(data, dict) else None)
    if "md" in files:  # one machine line goes up into the section's head; several stay where each class's part is
        lines = text.splitlines()
        kept = "\n".join(line for line in lines if len(machines) != 1 or line.strip() != machines[0])
        body = demote(re.sub(r"\n{3,}", "\n\n", kept))
    else:  # a run that wrote only JSON: shown as it was written
        body = "```json\n" + text + "\n```"
    head = [f"## {name}", "", f"Latest run: {when}.", ""]
    if len(machines) > 1:
        head.append("machine: one per class, in its part below")
    else:
        head.append(machines[0] if machines else "machine: not recorded")
    return "\n".join(head) + "\n\n" + body + "\n"


def render(results: Path) -> str:
    runs = latest_runs(results)
    parts = [
        "# Bench results",
        "",
        "The latest run of each benchmark, as the bench wrote it; `make results` rewrites this file from bench/results/"
        " (raw output, not tracked). What was tried before, and why each default is what it is: [docs/tuning.md](../docs/tuning.md)."
        " The realistic sets keep their own table: [RESULTS-realistic.md](RESULTS-realistic.md).",
        "",
    ]
    if not runs:
        parts.append("No runs in bench/results/ yet.\n")
    parts += [section(name, files) for name, files in runs.items()]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = ap.parse_args()
    if not args.results.is_dir():
        raise SystemExit(f"no {args.results}: run a benchmark first")
    from credo.fsutil import write_text_atomic

    write_text_atomic(args.out, render(args.results))  # temp file + os.replace: a reader never sees half a table
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
