"""Reading JSONL, Parquet and plain-text inputs as a stream, and writing dolma-shaped JSONL.

Broken input never crashes a run and is never dropped silently: each bad line (or unreadable file) is written, with its
file and line number, to a per-task report file that the stage's report gathers at the end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.utils.logging import logger

from credo.data.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".md", ".text")
DOLMA_TOP = ("source", "added", "created")  # dolma's top-level fields besides id, text, metadata


def input_kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def plan_inputs(path: str | Path) -> tuple[Path, list[str]]:
    """The folder to read from and the input files in it (relative, sorted); a clear error when there are none."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    if path.is_file():
        if input_kind(path.name) is None:
            raise DataError(f"input {path} is not JSONL, Parquet or text (.jsonl/.json/.parquet/.txt/.md)")
        return path.parent.resolve(), [path.name]
    files = sorted(
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and input_kind(p.name) and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"no JSONL, Parquet or text files under {path}")
    return path.resolve(), files


def inputs_digest(folder: Path, files: list[str]) -> str:
    """What identifies an input batch: its folder and each file's path, size and modification time."""
    digest = hashlib.sha256(str(folder).encode())
    for rel in files:
        st = (Path(folder) / rel).stat()
        digest.update(f"|{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


class BadInputLog:
    """Appends one JSON line per broken input record; opened lazily so clean inputs leave no file."""

    def __init__(self, folder: str | None, rank: int) -> None:
        self.path = Path(folder) / f"{rank:05d}.jsonl" if folder else None
        self._f = None

    def add(self, file: str, line: int, error: str) -> None:
        logger.debug(f"skipping {file}:{line}: {error}")
        if self.path is None:
            return
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "w", encoding="utf-8")
        self._f.write(json.dumps({"file": file, "line": line, "error": error}) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


class CorpusReader(BaseDiskReader):
    """One reader for the formats credo takes: JSONL (one object per line), Parquet (row batches), text (a file each).

    `files` are paths relative to `data_folder`; tasks take every world_size-th file, as datatrove readers do.
    `bad_folder` receives the broken-line report; leave it None on a second pass over the same input.
    """

    name = "📚 credo corpus"

    def __init__(self, data_folder: str, files: list[str], text_key: str = "text", id_key: str = "id",
                 bad_folder: str | None = None, doc_progress: bool = True) -> None:
        super().__init__(data_folder, text_key=text_key, id_key=id_key, doc_progress=doc_progress, add_file_path=False)
        self.files = list(files)
        self.bad_folder = bad_folder
        self._bad: BadInputLog | None = None
        self._line = 0

    def _doc(self, data: Any, path: str, line: int) -> Document | None:
        if not isinstance(data, dict):
            self._bad.add(path, line, f"expected a JSON object, got {type(data).__name__}")
            return None
        text = data.get(self.text_key)
        if not isinstance(text, str):
            self._bad.add(path, line, f"no string field {self.text_key!r} (fields: {', '.join(map(str, data)) or 'none'})")
            return None
        if not text.strip():
            self._bad.add(path, line, "empty text")
            return None
        doc = self.get_document_from_dict(data, path, line)
        if doc is not None:
            doc.id = str(doc.id)
            doc.metadata.setdefault("file_path", path)
        return doc

    def read_file(self, filepath: str) -> DocumentsPipeline:
        kind = input_kind(filepath)
        self._line = 0  # the line (or row) reached, so a file that breaks off is reported where it did
        try:
            if kind == "jsonl":
                yield from self._read_jsonl(filepath)
            elif kind == "parquet":
                yield from self._read_parquet(filepath)
            else:
                yield from self._read_text(filepath)
        except Exception as e:  # noqa: BLE001 — unreadable, truncated or corrupt file (OSError, EOFError, zlib/zstd errors, …): report it, keep what came before, go on
            where = f"after line {self._line}" if self._line else "at the start"
            self._bad.add(filepath, self._line + 1 if self._line else 0,
                          f"cannot read file {where} (truncated or corrupt?): {type(e).__name__}: {e}")

    def _read_jsonl(self, filepath: str) -> Iterator[Document]:
        import orjson

        with self.data_folder.open(filepath, "rb", compression="infer") as f:
            for li, raw in enumerate(f, start=1):
                self._line = li - 1
                if not raw.strip():
                    continue
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError as e:
                    self._bad.add(filepath, li, f"broken JSON: {e}")
                    continue
                if (doc := self._doc(data, filepath, li)) is not None:
                    yield doc
                self._line = li

    def _read_parquet(self, filepath: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        with self.data_folder.open(filepath, "rb") as f:
            row = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for data in batch.to_pylist():
                    row += 1
                    if (doc := self._doc(data, filepath, row)) is not None:
                        yield doc
                    self._line = row

    def _read_text(self, filepath: str) -> Iterator[Document]:
        with self.data_folder.open(filepath, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self._bad.add(filepath, 0, f"not UTF-8 text: {e}")
            return
        if (doc := self._doc({self.text_key: text, self.id_key: filepath}, filepath, 1)) is not None:
            yield doc

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self._bad = BadInputLog(self.bad_folder, rank)
        try:
            for doc in self.read_files_shard(self.files[rank::world_size]):
                self.update_doc_stats(doc)
                yield doc
        finally:
            self._bad.close()


def dolma_record(doc: Document) -> dict[str, Any]:
    """A document as dolma writes it: id, text, source, added, created at the top, everything else in metadata."""
    meta = dict(doc.metadata)
    record: dict[str, Any] = {"id": doc.id, "text": doc.text}
    for key in DOLMA_TOP:
        if key in meta:
            record[key] = meta.pop(key)
    record["metadata"] = meta
    return record


def _writer_adapter(self: Any, doc: Document) -> dict[str, Any]:
    return dolma_record(doc)


def jsonl_writer(folder: str | Path):
    """datatrove's JSONL writer with one plain (uncompressed) file per task, in dolma's field layout."""
    from datatrove.pipeline.writers import JsonlWriter

    return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None, adapter=_writer_adapter)
