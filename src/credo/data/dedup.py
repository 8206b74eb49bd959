"""`credo data dedup`: exact and MinHash near-duplicate removal against a persistent index of earlier batches.

Both passes are datatrove's (signatures, sorted-bucket matching, clustering, filtering). Each batch adds its exact
hashes and MinHash bands to the index folder as plain binary files (no pickle), so the next batch is deduplicated
against everything ingested before. The index is only extended once the batch's output is complete.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from credo.data.errors import DataError
from credo.data.executor import RunConfig, Stage, run_stages
from credo.data.io import CorpusReader, inputs_digest, jsonl_writer, plan_inputs
from credo.data.words import OFFLINE
from credo.data.workspace import DATA_DIR, REMOVED_DIR, Workspace, overlap, print_report, summarize
from credo.fsutil import write_text_atomic

BATCHES = "batches.json"
_SPACE = re.compile(r"\s+")


def exact_key(doc: Document) -> bytes:
    """What counts as "the same text": case and runs of whitespace ignored. Bytes, as datatrove's xxhash wants."""
    return _SPACE.sub(" ", doc.text.strip().lower()).encode("utf-8")


exact_key.__annotations__["return"] = bytes  # datatrove reads the real type, not the postponed string


class DropEmptyFiles(PipelineStep):
    """Delete zero-byte signature files (from tasks that saw no documents) before a stage that cannot read them."""

    name = "🧹 drop empty files"
    type = "🔧 - FIX"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> None:  # eager on purpose: runs before the next step
        for p in Path(self.folder).rglob("*"):
            if p.is_file() and p.stat().st_size == 0:
                p.unlink()
        return None


def batch_name(folder: Path, files: list[str]) -> str:
    """A stable name for an input batch (paths, sizes, mtimes), so a rerun resumes rather than re-indexes."""
    return "b" + inputs_digest(folder, files)[:15]


def read_batches(index: Path) -> list[dict[str, Any]]:
    path = index / BATCHES
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["batches"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"dedup index {path} is corrupt ({type(e).__name__}); point --index at a fresh folder") from None


def _index_files(index: Path, batch: str) -> list[Path]:
    return sorted(p for p in index.rglob(f"{batch}*") if p.is_file())


def dedup_stages(folder: str, files: list[str], ws: Workspace, index: Path, batch: str, tasks: int,
                 text_key: str = "text", progress: bool = True) -> list[Stage]:
    from datatrove.pipeline.dedup import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupBuildIndex, ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashBuildIndex
    from datatrove.utils.hashing import HashConfig

    w = ws.work
    # sha1: datatrove's xxhash path hands str to xxhash, which current xxhash releases refuse
    exact = ExactDedupConfig(content_getter=exact_key, only_dedup_in_index=False, hash_config=HashConfig(64, "sha1"))
    mh = MinhashConfig(hash_config=HashConfig(64, "sha1"))
    removed = ws.staging / REMOVED_DIR
    new_index = w / "new-index"
    for sub in ("exact", "minhash"):
        (index / sub).mkdir(parents=True, exist_ok=True)

    def reader(report_bad: bool) -> CorpusReader:
        return CorpusReader(folder, files, text_key=text_key, bad_folder=str(ws.bad) if report_bad else None,
                            doc_progress=progress)

    exact_sigs, exact_dups = str(w / "exact" / "sigs"), str(w / "exact" / "dups")
    mh_sigs, mh_buckets, mh_remove = str(w / "minhash" / "sigs"), str(w / "minhash" / "buckets"), str(w / "minhash" / "remove")
    return [
        Stage("exact-signatures", [reader(True), ExactDedupSignature(exact_sigs, exact)], tasks),
        Stage("exact-find", [DropEmptyFiles(exact_sigs), ExactFindDedups(exact_sigs, exact_dups, exact, index_folder=str(index / "exact"))], 1),
        Stage("minhash-signatures", [
            reader(False),
            ExactDedupFilter(exact_dups, exact, exclusion_writer=jsonl_writer(removed / "dedup-exact")),
            MinhashDedupSignature(mh_sigs, mh, language=OFFLINE),
        ], tasks),
        Stage("minhash-buckets", [MinhashDedupBuckets(mh_sigs, mh_buckets, index_folder=str(index / "minhash"), config=mh,
                                                      only_dedup_in_index=False)], mh.num_buckets),
        Stage("minhash-cluster", [MinhashDedupCluster(mh_buckets, mh_remove, config=mh)], 1),
        Stage("filter", [
            reader(False),
            ExactDedupFilter(exact_dups, exact),
            MinhashDedupFilter(mh_remove, exclusion_writer=jsonl_writer(removed / "dedup-near")),
            jsonl_writer(ws.staging / DATA_DIR),
        ], tasks),
        Stage("exact-index", [DropEmptyFiles(exact_sigs), ExactDedupBuildIndex(exact_sigs, str(new_index / "exact"), batch, exact)], 1),
        Stage("minhash-index", [MinhashBuildIndex(mh_sigs, str(new_index / "minhash"), batch, config=mh)], mh.num_buckets),
    ]


def _commit_index(ws: Workspace, index: Path, entry: dict[str, Any]) -> None:
    """Move the batch's index files into the index, then list the batch; both steps can be repeated safely."""
    new_index = ws.work / "new-index"
    for src in sorted(new_index.rglob("*")) if new_index.is_dir() else []:
        if src.is_file():
            dst = index / src.relative_to(new_index)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    batches = [b for b in read_batches(index) if b.get("name") != entry["name"]] + [entry]
    write_text_atomic(index / BATCHES, json.dumps({"batches": batches}, indent=2) + "\n")


def run_dedup(inp: str | Path, out: str | Path, index: str | Path, cfg: RunConfig | None = None, text_key: str = "text",
              force: bool = False, show: bool = True) -> dict[str, Any]:
    cfg = cfg or RunConfig()
    folder, files = plan_inputs(inp)
    index = Path(index).expanduser().absolute()
    batch = batch_name(folder, files)
    tasks = min(cfg.tasks, len(files))
    ws = Workspace(out, force, {"stage": "dedup", "input": batch, "index": str(index), "tasks": tasks, "text_key": text_key})
    ws.check(inp, index)
    if ws.done:
        return ws.written_report(show)
    if overlap(index, Path(inp)):
        raise DataError(f"dedup index {index} and input {inp} overlap: keep the index outside the input")
    if index.exists() and not index.is_dir():
        raise DataError(f"dedup index {index} is not a folder")
    earlier = read_batches(index)
    if any(b.get("name") == batch for b in earlier) and not ws.resuming:
        if not force:
            raise DataError(f"this input is already in the dedup index {index} (batch {batch}); pass --force to redo it")
        for p in _index_files(index, batch):  # redo: forget this batch, or it would match itself
            p.unlink()
        earlier = [b for b in earlier if b.get("name") != batch]
    ws.begin()
    if not run_stages(dedup_stages(str(folder), files, ws, index, batch, tasks, text_key, show), cfg, ws.logs):
        return {"submitted": True, "work": str(ws.work)}
    report = summarize(ws.staging, ws.bad, {
        "stage": "dedup", "input": str(inp), "files": len(files), "index": str(index), "batch": batch,
        "earlier_batches": len([b for b in earlier if b.get("name") != batch]),
    })
    _commit_index(ws, index, {"name": batch, "input": str(folder), "files": len(files), "documents": report["documents_in"],
                              "kept": report["kept"], "added": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    ws.commit(report)
    if show:
        print_report(report, ws.out)
    return report
