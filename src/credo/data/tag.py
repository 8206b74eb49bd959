"""`credo data tag`: give every document dolma's provenance fields (id, text, source, added, created, metadata).

Source and date come from the command line, else from the record's own fields, else from the file's path (its first
folder, or a YYYY-MM-DD / YYYYMMDD in its name). `created` is ISO 8601; `added` is when this batch was tagged.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from credo.data.errors import DataError
from credo.data.executor import RunConfig, Stage, run_stages
from credo.data.io import CorpusReader, inputs_digest, jsonl_writer, plan_inputs
from credo.data.workspace import DATA_DIR, Workspace, print_report, summarize

DATE_FIELDS = ("created", "date", "timestamp", "published", "publish_date")
SOURCE_FIELDS = ("source", "url", "domain", "site")
_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])(?!\d)")


def parse_date(value: Any) -> str | None:
    """ISO 8601 (UTC) for a year, year-month, date, datetime or Unix timestamp; None when it is not a date."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0 < value < 1e11:
            return datetime.fromtimestamp(value, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    s = value.strip()
    for fmt in ("%Y", "%Y-%m", "%Y-%m-%d"):
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        except ValueError:
            pass
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    d = d.replace(tzinfo=timezone.utc) if d.tzinfo is None else d.astimezone(timezone.utc)
    return d.isoformat(timespec="seconds").replace("+00:00", "Z")


def date_from_path(path: str) -> str | None:
    m = _DATE_IN_NAME.search(Path(path).name) or _DATE_IN_NAME.search(path)
    return parse_date(f"{m.group(1)}-{m.group(2)}-{m.group(3)}") if m else None


def source_from_value(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    m = re.match(r"^[a-z]+://([^/]+)", value.strip())  # a URL names its site
    return m.group(1).lower() if m else value.strip()


def source_from_path(path: str) -> str:
    parts = Path(path).parts
    return parts[0] if len(parts) > 1 else Path(path).name.split(".")[0]


class ProvenanceTagger(PipelineStep):
    """Set source, created and added on each document (kept in metadata; the writer lifts them to dolma's top level)."""

    type = "🏷 - TAGGER"
    name = "🏷 provenance"

    def __init__(self, added: str, source: str | None = None, date: str | None = None) -> None:
        super().__init__()
        self.added, self.source, self.date = added, source, date

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                meta = doc.metadata
                path = str(meta.get("file_path", ""))
                source = self.source or next((s for f in SOURCE_FIELDS if (s := source_from_value(meta.get(f)))), None)
                meta["source"] = source or source_from_path(path)
                created = self.date or next((d for f in DATE_FIELDS if (d := parse_date(meta.get(f)))), None) or date_from_path(path)
                if created:
                    meta["created"] = created
                else:
                    meta.pop("created", None)
                    self.stat_update("no_date")
                meta["added"] = self.added
            yield doc


def run_tag(inp: str | Path, out: str | Path, source: str | None = None, date: str | None = None,
            cfg: RunConfig | None = None, text_key: str = "text", force: bool = False, show: bool = True) -> dict[str, Any]:
    cfg = cfg or RunConfig()
    created = None
    if date is not None and (created := parse_date(date)) is None:
        raise DataError(f"--date {date!r} is not a date: give YYYY, YYYY-MM, YYYY-MM-DD or an ISO 8601 time")
    if source is not None and not source.strip():
        raise DataError("--source must not be empty")
    folder, files = plan_inputs(inp)
    tasks = min(cfg.tasks, len(files))
    ws = Workspace(out, force, {"stage": "tag", "input": inputs_digest(folder, files), "tasks": tasks, "source": source,
                                "date": created, "text_key": text_key})
    ws.check(inp)
    if ws.done:
        return ws.written_report(show)
    # `added` is when this batch was tagged: chosen at the first start, so a resumed run gives every document the same
    added = ws.begin(added=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"))["added"]
    steps = [CorpusReader(str(folder), files, text_key=text_key, bad_folder=str(ws.bad), doc_progress=show),
             ProvenanceTagger(added, source.strip() if source else None, created), jsonl_writer(ws.staging / DATA_DIR)]
    if not run_stages([Stage("tag", steps, tasks)], cfg, ws.logs):
        return {"submitted": True, "work": str(ws.work)}
    report = summarize(ws.staging, ws.bad, {"stage": "tag", "input": str(inp), "files": len(files), "added": added})
    report["undated"] = _count_undated(ws.staging / DATA_DIR)
    ws.commit(report)
    if show:
        print_report(report, ws.out)
        if report["undated"]:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]{report['undated']} document(s) have no date[/yellow]: pass --date or add a 'date' field")
    return report


def _count_undated(folder: Path) -> int:
    import json

    n = 0
    for part in sorted(folder.rglob("*.jsonl")):
        with open(part, encoding="utf-8") as f:
            n += sum("created" not in json.loads(line) for line in f)
    return n
