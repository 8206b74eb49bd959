"""What changed since the previous compile of the same layer folder: clause by clause, text and figure.

The edit-compile-look loop needs one answer after each compile: which clauses did I touch, and did the layer follow
them better or worse? Clause ids are stable across edits (see `credo.manifesto`), so the previous folder's
`manifesto.md` and `layer.json` are enough to tell added, removed and edited clauses apart and to set each clause's
new figure beside its old one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from credo.errors import CredoError
from credo.manifesto import Manifesto


def previous_folder_of(tmp: Path) -> Path:
    """The folder `save_layer` is about to replace, from its temporary sibling `.NAME.RANDOM.tmp`."""
    name = tmp.name
    if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
        return tmp.parent / name[1:].rsplit(".", 2)[0]
    return tmp


def read_previous(folder: Path) -> tuple[Manifesto, dict[str, Any]] | None:
    """The previous compile's manifesto and report, or None when the folder holds no earlier `hyper` layer."""
    info_path, text_path = folder / "layer.json", folder / "manifesto.md"
    if not info_path.is_file() or not text_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        manifesto = Manifesto.from_file(text_path)
    except (json.JSONDecodeError, UnicodeDecodeError, CredoError):
        return None
    if info.get("kind") != "hyper":
        return None
    return manifesto, info.get("report", {})


def clause_changes(old: Manifesto, old_report: dict[str, Any], new: Manifesto, new_report: dict[str, Any]) -> dict[str, Any]:
    """Per clause: status (added, removed, edited, same) and its fidelity before -> after; plus the overall move.

    An edit near the start of a clause can change its slug id; a new clause that shares most of its words with a
    vanished one in the same section counts as that clause edited, not as one removed and one added.
    """
    old_by_id = {c.id: c for c in old.clauses}
    new_ids = {c.id for c in new.clauses}
    renamed: dict[str, str] = {}  # new id -> old id
    orphans = [c for c in old.clauses if c.id not in new_ids]
    for c in new.clauses:
        if c.id in old_by_id or not orphans:
            continue
        best = max(orphans, key=lambda o: (o.section == c.section, _overlap(o.text, c.text)))
        if best.section == c.section and _overlap(best.text, c.text) >= 0.5:
            renamed[c.id] = best.id
            orphans.remove(best)
    old_fid = old_report.get("clause_fidelity", {})
    new_fid = new_report.get("clause_fidelity", {})
    lines: dict[str, str] = {}
    counts = {"added": 0, "removed": 0, "edited": 0, "same": 0}
    for c in new.clauses:
        was = old_by_id.get(renamed.get(c.id, c.id))
        status = "added" if was is None else "same" if was.text == c.text else "edited"
        counts[status] += 1
        note = f" (was {was.id})" if was is not None and was.id != c.id else ""
        lines[c.id] = f"{status}{note}: {_move(old_fid.get(was.id) if was else None, new_fid.get(c.id))}"
    for o in orphans:
        counts["removed"] += 1
        lines[o.id] = f"removed: {_move(old_fid.get(o.id), None)}"
    overall = {}
    for key in ("first_token_fidelity_heldout", "first_token_fidelity_train"):
        if old_report.get(key) is not None and new_report.get(key) is not None:
            overall[key] = _move(old_report[key], new_report[key])
    return {"summary": counts, "overall": overall, "clauses": lines}


def _move(before: float | None, after: float | None) -> str:
    text = f"{_fmt(before)} -> {_fmt(after)}"
    return text + f" ({after - before:+.3f})" if before is not None and after is not None else text


def _overlap(a: str, b: str) -> float:
    wa, wb = set(re.findall(r"[a-z0-9']+", a.lower())), set(re.findall(r"[a-z0-9']+", b.lower()))
    return len(wa & wb) / max(len(wa | wb), 1)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
