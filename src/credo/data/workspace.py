"""Where a stage works and how its output appears: a hidden work folder beside OUT, renamed into place at the end.

OUT appears complete or not at all. The work folder holds datatrove's logs and completion markers, so running the
same command again after Ctrl-C (or a kill) resumes; it remembers which command it belongs to, so another command
never resumes it, and it is removed once OUT is in place. Every OUT carries a marker file naming the run that wrote
it: --force replaces only such a folder, never one credo did not write.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from credo.data.errors import DataError
from credo.fsutil import remove_dir, sweep_stale, write_text_atomic

DATA_DIR = "data"  # kept documents
REMOVED_DIR = "removed"  # dropped documents, one folder per rule family, each with its reason
REPORT = "report.json"
BAD_INPUT = "bad-input.jsonl"
MARKER = ".credo-data.json"  # in every OUT: the stage, run and command that wrote it
RUN = "run.json"  # in the work folder: the run id and command it belongs to, and what was chosen at its first start


def overlap(a: Path, b: Path) -> bool:
    """Whether two paths are the same or one lies inside the other (after resolving links)."""
    a, b = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return a == b or a in b.parents or b in a.parents


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Workspace:
    """OUT and its work folder for one command; `command` (stage, inputs, settings) is what a resumed run must match."""

    def __init__(self, out: str | Path, force: bool = False, command: dict[str, Any] | None = None) -> None:
        self.out = Path(out).expanduser().absolute()
        self.work = self.out.parent / f".{self.out.name}.credo-work"
        self.force = force
        self.command = json.loads(json.dumps(command or {}))  # as it reads back from run.json
        self.run: dict[str, Any] = {}
        self.resuming = False
        self.done = False  # this very command already wrote OUT (it was stopped while removing its work folder)

    def check(self, inputs: str | Path, *others: Path) -> None:
        """Refuse before anything is written: an OUT that overlaps the input (or `others`, such as the dedup index),
        an OUT that exists (without --force), or one that credo did not write (even with --force)."""
        for path in (Path(inputs), *others):
            if overlap(self.out, path):
                raise DataError(f"output {self.out} and {path.expanduser().absolute()} overlap: one must not be, or lie inside, the other")
        sweep_stale(self.out.parent)  # a work folder a killed run was deleting
        saved = _read_json(self.work / RUN)
        written = _read_json(self.out / MARKER) if self.out.is_dir() else None
        if saved and written and saved.get("id") == written.get("run"):  # killed after OUT was in place: only clean-up was left
            remove_dir(self.work)
            if written.get("command") == self.command:
                self.done = True
                return
            saved = None
        self.resuming = bool(saved) and saved.get("command") == self.command
        if self.out.exists() or self.out.is_symlink():
            if not self.force:
                raise DataError(f"{self.out} already exists (pass --force to replace it)")
            if written is None:
                raise DataError(f"{self.out} exists and was not written by credo data (no {MARKER}); "
                                "credo replaces only its own output: remove it yourself or choose another OUT")
        if saved and not self.resuming and not self.force:
            raise DataError(f"{self.work} holds an interrupted run of another command (other input or settings): "
                            "run that command again to finish it, or pass --force to start this one over")

    def begin(self, **first: Any) -> dict[str, Any]:
        """Start the run, or resume the interrupted one of the same command; `first` are values chosen at the first start
        (a timestamp, say), which a resumed run keeps. Returns the run's record."""
        if self.resuming:
            self.run = _read_json(self.work / RUN) or {}
            return self.run
        remove_dir(self.work)  # another command's interrupted run (with --force), or one from before run.json existed
        self.run = {"id": uuid.uuid4().hex, "command": self.command, **first}
        write_text_atomic(self.work / RUN, json.dumps(self.run, indent=2) + "\n")
        return self.run

    @property
    def staging(self) -> Path:
        return self.work / "out"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def bad(self) -> Path:
        return self.work / "bad-input"

    def written_report(self, show: bool = False) -> dict[str, Any]:
        """The report of the OUT this very command already wrote (see `done`), shown as a finished run shows it."""
        report = _read_json(self.out / REPORT) or {}
        if show and report:
            print_report(report, self.out)
        return report

    def commit(self, report: dict[str, Any]) -> Path:
        """Write the report and marker, gather the bad-input lines, and rename the staged output onto OUT."""
        (self.staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
        bad_lines = sorted(self.bad.glob("*.jsonl")) if self.bad.is_dir() else []
        if bad_lines:
            with open(self.staging / BAD_INPUT, "w", encoding="utf-8") as f:
                for part in bad_lines:
                    f.write(part.read_text(encoding="utf-8"))
        write_text_atomic(self.staging / REPORT, json.dumps(report, indent=2) + "\n")
        marker = {"stage": self.command.get("stage"), "run": self.run.get("id"), "command": self.command,
                  "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_text_atomic(self.staging / MARKER, json.dumps(marker, indent=2) + "\n")
        if self.out.exists():
            trash = self.work / "old"
            os.replace(self.out, trash)
        os.replace(self.staging, self.out)
        remove_dir(self.work)  # out of sight in one rename (run.json with it), then deleted
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
