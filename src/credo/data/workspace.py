"""Where a stage works and how its output appears: a hidden work folder beside OUT, renamed into place at the end.

OUT appears complete or not at all. The work folder holds datatrove's logs and completion markers, so running the
same command again after Ctrl-C resumes; it is removed once OUT is in place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from credo.data.errors import DataError
from credo.fsutil import write_text_atomic

DATA_DIR = "data"  # kept documents
REMOVED_DIR = "removed"  # dropped documents, one folder per rule family, each with its reason
REPORT = "report.json"
BAD_INPUT = "bad-input.jsonl"


class Workspace:
    def __init__(self, out: str | Path, force: bool = False) -> None:
        self.out = Path(out).expanduser().absolute()
        self.work = self.out.parent / f".{self.out.name}.credo-work"
        self.force = force

    def check(self, inputs: Path) -> None:
        """Refuse before anything is written: an OUT that exists, or an OUT that is (or is inside) the input."""
        if self.out.exists() and not self.force:
            raise DataError(f"{self.out} already exists (pass --force to replace it)")
        inp = inputs.resolve()
        if self.out == inp or inp in self.out.parents:
            raise DataError(f"output {self.out} must not be inside the input folder {inp}")

    @property
    def staging(self) -> Path:
        return self.work / "out"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def bad(self) -> Path:
        return self.work / "bad-input"

    @property
    def resuming(self) -> bool:
        return self.work.exists()

    def commit(self, report: dict[str, Any]) -> Path:
        """Write the report, gather the bad-input lines, and rename the staged output onto OUT."""
        (self.staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
        bad_lines = sorted(self.bad.glob("*.jsonl")) if self.bad.is_dir() else []
        if bad_lines:
            with open(self.staging / BAD_INPUT, "w", encoding="utf-8") as f:
                for part in bad_lines:
                    f.write(part.read_text(encoding="utf-8"))
        write_text_atomic(self.staging / REPORT, json.dumps(report, indent=2) + "\n")
        if self.out.exists():
            trash = self.work / "old"
            os.replace(self.out, trash)
        os.replace(self.staging, self.out)
        shutil.rmtree(self.work, ignore_errors=True)
        return self.out


def count_lines(folder: Path) -> int:
    return sum(sum(1 for _ in open(p, "rb")) for p in sorted(folder.rglob("*.jsonl"))) if folder.is_dir() else 0


def summarize(staging: Path, bad: Path, extra: dict[str, Any] | None = None, examples: int = 3) -> dict[str, Any]:
    """Counts of kept and removed documents (by reason, with a few example ids) and of bad input lines."""
    removed: dict[str, dict[str, Any]] = {}
    repaired = 0
    for part in sorted((staging / REMOVED_DIR).rglob("*.jsonl")) if (staging / REMOVED_DIR).is_dir() else []:
        with open(part, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                meta = rec.get("metadata", {})
                reason = str(meta.get("filter_reason") or part.parent.name)
                if "filter_reason" in meta and ":" not in reason:  # datatrove's own reasons ("top_4_gram") get the filter's family in front
                    reason = f"{part.parent.name}:{reason}"
                entry = removed.setdefault(reason, {"count": 0, "examples": []})
                entry["count"] += 1
                if len(entry["examples"]) < examples:
                    ex = {"id": rec.get("id")}
                    if "junk_match" in meta:
                        ex["matched"] = meta["junk_match"]
                    entry["examples"].append(ex)
    kept_files = sorted((staging / DATA_DIR).rglob("*.jsonl")) if (staging / DATA_DIR).is_dir() else []
    kept = 0
    for part in kept_files:
        with open(part, encoding="utf-8") as f:
            for line in f:
                kept += 1
                repaired += '"unicode_repaired":true' in line.replace(" ", "")
    bad_rows = []
    for part in sorted(bad.glob("*.jsonl")) if bad.is_dir() else []:
        bad_rows += [json.loads(x) for x in part.read_text(encoding="utf-8").splitlines() if x.strip()]
    n_removed = sum(e["count"] for e in removed.values())
    report = {
        "documents_in": kept + n_removed,
        "kept": kept,
        "removed": n_removed,
        "removed_by_reason": dict(sorted(removed.items(), key=lambda kv: -kv[1]["count"])),
        "unicode_repaired_kept": repaired,
        "bad_input_lines": len(bad_rows),
        "bad_input_first": bad_rows[:20],
    }
    report.update(extra or {})
    return report


def print_report(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    console.print(f"[bold]{report['kept']}[/bold] of {report['documents_in']} documents kept -> {out}")
    if report["removed_by_reason"]:
        table = Table("removed because", "documents", "example")
        for reason, entry in report["removed_by_reason"].items():
            ex = entry["examples"][0] if entry["examples"] else {}
            table.add_row(reason, str(entry["count"]), str(ex.get("matched") or ex.get("id", "")))
        console.print(table)
    if report["bad_input_lines"]:
        console.print(f"[yellow]{report['bad_input_lines']} bad input line(s) skipped[/yellow] (see {out / BAD_INPUT}):")
        for row in report["bad_input_first"][:5]:
            console.print(f"  {row['file']}:{row['line']}: {row['error']}", highlight=False)
