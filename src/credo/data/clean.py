"""`credo data clean`: Unicode repair, assistant-junk removal, then the Gopher, C4 and FineWeb quality heuristics.

The heuristics are datatrove's own filters, given an offline tokenizer so nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from credo.data.executor import RunConfig, Stage, run_stages
from credo.data.io import CorpusReader, inputs_digest, jsonl_writer, plan_inputs
from credo.data.junk import AssistantJunkFilter
from credo.data.repair import UnicodeRepair
from credo.data.words import OFFLINE
from credo.data.workspace import DATA_DIR, REMOVED_DIR, Workspace, print_report, summarize


def clean_steps(folder: str, files: list[str], staging: Path, bad: Path | None, quality: bool = True,
                text_key: str = "text", progress: bool = True) -> list[Any]:
    """The clean pipeline as datatrove steps; each filter writes what it drops, with the reason, under removed/."""
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    removed = staging / REMOVED_DIR
    steps: list[Any] = [
        CorpusReader(folder, files, text_key=text_key, bad_folder=str(bad) if bad else None, doc_progress=progress),
        UnicodeRepair(),
        AssistantJunkFilter(exclusion_writer=jsonl_writer(removed / "junk")),
    ]
    if quality:
        steps += [
            GopherQualityFilter(language=OFFLINE, exclusion_writer=jsonl_writer(removed / "gopher-quality")),
            GopherRepetitionFilter(language=OFFLINE, exclusion_writer=jsonl_writer(removed / "gopher-repetition")),
            C4QualityFilter(language=OFFLINE, filter_no_terminal_punct=False,
                            exclusion_writer=jsonl_writer(removed / "c4")),
            FineWebQualityFilter(language=OFFLINE, exclusion_writer=jsonl_writer(removed / "fineweb")),
        ]
    steps.append(jsonl_writer(staging / DATA_DIR))
    return steps


def run_clean(inp: str | Path, out: str | Path, cfg: RunConfig | None = None, quality: bool = True,
              text_key: str = "text", force: bool = False, show: bool = True) -> dict[str, Any]:
    cfg = cfg or RunConfig()
    folder, files = plan_inputs(inp)
    ws = Workspace(out, force, {"stage": "clean", "input": inputs_digest(folder, files), "tasks": cfg.tasks,
                                "quality": quality, "text_key": text_key})
    ws.check(inp)
    if ws.done:
        return ws.written_report(show)
    ws.begin()
    steps = clean_steps(str(folder), files, ws.staging, ws.bad, quality, text_key, progress=show)
    if not run_stages([Stage("clean", steps)], cfg, ws.logs):
        return {"submitted": True, "work": str(ws.work)}
    report = summarize(ws.staging, ws.bad, {"stage": "clean", "input": str(inp), "files": len(files), "quality_filters": quality})
    ws.commit(report)
    if show:
        print_report(report, ws.out)
    return report
