"""An evaluation's finished parts, kept in its output folder as they finish, so an interrupted run picks up after them.

A resolving evaluation runs for hours on 2 cores (1,000 HellaSwag items take about 10 minutes a row). Each finished
part (a row of a suite, a manifesto's group of a per-manifesto suite, or a whole row-minor suite) is written to
`.eval-progress.json` beside the report, under a key of everything that decides the scores (suites, sizes, data, the
base, each layer folder's layer.json, the user's item files); a rerun with the same key reads them back instead of
scoring again, a different key starts afresh. The file goes once the report is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credo.fsutil import write_text_atomic

FILE = ".eval-progress.json"


@dataclass
class Progress:
    path: Path | None  # None: nothing is kept (no output folder given)
    key: dict[str, Any]
    done: dict[str, Any]

    @classmethod
    def open(cls, folder: Path | None, key: dict[str, Any], log: Callable[[str], None] = lambda s: None) -> Progress:
        """The parts kept in `folder` for this `key` (none when the folder holds another evaluation's, or none)."""
        if folder is None:
            return cls(None, key, {})
        path = Path(folder) / FILE
        try:
            kept = json.loads(path.read_text())
            done = kept["done"] if kept.get("key") == json.loads(json.dumps(key)) and isinstance(kept.get("done"), dict) else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            done = {}
        if done:
            log(f"resuming: {len(done)} finished part(s) read back from {path}")
        return cls(path, key, done)

    def get(self, suite: str, part: str, score: Callable[[], Any]) -> Any:
        """The kept result of `part` of `suite`, else `score()`'s, kept at once. Both come back as JSON gives them,
        so a resumed run and one that never stopped report the same values."""
        name = f"{suite}|{part}"
        if name not in self.done:
            self.done[name] = json.loads(json.dumps(score()))
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(self.path, json.dumps({"key": self.key, "done": self.done}))
        return self.done[name]

    @staticmethod
    def clear(folder: Path) -> None:
        """Once the report is written, its parts are not needed."""
        (Path(folder) / FILE).unlink(missing_ok=True)
