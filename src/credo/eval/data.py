"""Reading evaluation data: where it lives, and JSONL/CSV readers whose errors name the file and the line.

Every file is read and checked in full before any model work starts, so a bad line costs seconds, not a long run.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from credo.errors import DataError

DATA_ENV = "CREDO_DATA"


def repo_roots() -> list[Path]:
    """Where the project checkout may be: the nearest folder with a pyproject.toml above the working directory, then
    the checkout this package was installed from (an editable install)."""
    roots = [p for p in (Path.cwd(), *Path.cwd().parents) if (p / "pyproject.toml").is_file()][:1]
    source = Path(__file__).resolve().parents[3]
    return roots + ([source] if (source / "pyproject.toml").is_file() else [])


def default_data_dir() -> Path:
    """`$CREDO_DATA`, else `<repo>/../shared/data`, else `./shared/data` (the first that exists; the last as a fallback)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    for candidate in [r.parent / "shared" / "data" for r in repo_roots()] + [Path.cwd() / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "shared" / "data"


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"data file {path} not found (give the data folder with --data DIR or ${DATA_ENV})")
    return path


def _check_fields(row: dict[str, Any], fields: dict[str, type | tuple[type, ...]], where: str) -> None:
    for name, typ in fields.items():
        if name not in row:
            raise DataError(f"{where}: missing field {name!r}")
        if not isinstance(row[name], typ):
            want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise DataError(f"{where}: field {name!r} should be {want}, got {type(row[name]).__name__}")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; anything else is a DataError naming the file and line."""
    require_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def read_jsonl(path: Path, fields: dict[str, type | tuple[type, ...]]) -> list[dict[str, Any]]:
    """All records of a JSONL file; each must be an object with `fields` of the given types. Blank lines are skipped."""
    rows: list[dict[str, Any]] = []
    for lineno, row in iter_jsonl(path):
        _check_fields(row, fields, f"{path} line {lineno}")
        row["_line"] = lineno
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


def read_csv(path: Path, columns: Iterable[str], header: bool = True) -> list[dict[str, Any]]:
    """Rows of a CSV file as dicts; with `header`, the named columns must be present, else they name the columns in order."""
    require_file(path)
    columns = list(columns)
    rows: list[dict[str, Any]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            names = columns
            if header:
                first = next(reader, None)
                if first is None:
                    raise DataError(f"{path}: empty file")
                missing = [c for c in columns if c not in first]
                if missing:
                    raise DataError(f"{path} line 1: header lacks column(s) {', '.join(missing)} (has {', '.join(first)})")
                names = first
            for record in reader:
                if not record or not any(x.strip() for x in record):
                    continue
                if len(record) != len(names):
                    raise DataError(f"{path} line {reader.line_num}: {len(record)} fields, expected {len(names)}")
                row: dict[str, Any] = dict(zip(names, record))
                row["_line"] = reader.line_num
                rows.append(row)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not valid CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


def spread(items: list[Any], n: int | None) -> list[Any]:
    """`n` items taken evenly across the list (so a small count still covers every part of a file); all when n is None."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
