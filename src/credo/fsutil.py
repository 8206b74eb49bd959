"""Atomic writes: a reader sees the old file or folder or the new one, never half of one.

Temporary siblings are named `.NAME.credo-HOST-PID-XXXX.tmp` (and `.old`, `.staging`) after the machine and process that
made them, so what a killed process left behind is recognised and swept at the next write into the same folder
(`sweep_stale`); another machine's (a shared folder) are left to it.
Finished files and folders get the permissions the user's umask gives, not the private ones of a temporary file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIXES = ("tmp", "old", "staging")
_OURS = re.compile(r"^\..+\.credo-([a-z0-9-]+)-(\d+)-[a-z0-9_]+\.(?:tmp|old|staging)$")
_LEGACY = re.compile(r"^\..+\.[a-z0-9_]{8}\.(?:tmp|old|staging)$")  # mkdtemp's names before they carried the pid
LEGACY_STALE_SECONDS = 3600.0  # an unnamed leftover is taken as stale once it has not changed for this long


class NotReplaceable(FileExistsError):
    """The target exists and is not what the caller may replace (a folder credo did not write)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (changing it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


@functools.lru_cache(maxsize=1)
def host() -> str:
    """This machine's name as it goes into temporary names: lowercase letters, digits and '-'."""
    import socket

    return re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:32] or "host"


def temp_prefix(target: Path) -> str:
    return f".{Path(target).name}.credo-{host()}-{os.getpid()}-"


def temp_dir(target: Path, suffix: str = "tmp") -> Path:
    """A new hidden folder beside `target`, named after it and this process."""
    target = Path(target)
    return Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=f".{suffix}", dir=target.parent))


@contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for any writer (text, safetensors, GGUF) to fill; it replaces `path` only once
    the block ends without error, so an interrupted write leaves the old file whole and no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with written_atomically(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


@contextmanager
def gguf_written_atomically(path: Path, arch: str) -> Iterator[Any]:
    """A `gguf.GGUFWriter` of architecture `arch` to fill with keys and tensors; when the block ends the file is written
    (header, keys, tensors) and replaces `path` in one rename, as `written_atomically` does for any writer."""
    import gguf

    with written_atomically(Path(path)) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        try:
            yield writer
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()


def save_tensors_atomic(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with written_atomically(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


@contextmanager
def atomic_dir(target: Path, overwrite: bool = False, replaces: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `target` in one rename.

    On any error (or Ctrl-C) the temporary folder is removed and `target` is left as it was. With `replaces`, an
    existing `target` is replaced only when it is a folder holding that file (the mark of what the caller writes):
    never any other folder or file.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{target} already exists (pass --force to replace it)")
        check_replaceable(target, replaces)
    sweep_stale(target.parent)
    tmp = temp_dir(target)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700
        swap_into(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(target: Path, mark: str | None) -> None:
    """Raise NotReplaceable unless `target` is missing or a real folder holding the file `mark` (no mark: anything goes)."""
    target = Path(target)
    if mark is None or not (target.exists() or target.is_symlink()):
        return
    if target.is_symlink() or not target.is_dir() or not (target / mark).is_file():
        what = "a folder" if target.is_dir() and not target.is_symlink() else "not a folder"
        raise NotReplaceable(f"{target} exists and is {what} without {mark}, so credo did not write it: "
                             "credo replaces only its own folders; remove it yourself or choose another name")


def swap_into(src: Path, target: Path) -> None:
    """Rename `src` to `target`, replacing an older folder with two renames; a reader never sees half of either."""
    if target.exists():
        trash = temp_dir(target, "old")
        os.replace(target, trash / target.name)
        os.replace(src, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, target)


def remove_dir(folder: Path) -> None:
    """Rename out of sight first, then delete: the folder disappears from its listing in one step."""
    folder = Path(folder)
    if not folder.exists():
        return
    trash = temp_dir(folder, "old")
    os.replace(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def sweep_stale(folder: Path) -> list[Path]:
    """Remove the temporary siblings in `folder` that a process which is no longer running left behind (killed in the
    middle of a write); those of running processes stay. Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not name.endswith(TEMP_SUFFIXES):
            continue
        try:
            changed = entry.lstat().st_mtime
        except OSError:
            continue
        if m := _OURS.match(name):
            stale = m.group(1) == host() and not owner_running(int(m.group(2)), changed)
        elif _LEGACY.match(name) and entry.is_dir():
            stale = now - changed > LEGACY_STALE_SECONDS
        else:
            continue
        if not stale:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def owner_running(pid: int, changed: float) -> bool:
    """Whether process `pid` is running and is the one that made an entry last changed at `changed`: a process that
    started after that is another one that reuses the number."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # running, under another user
    except OSError:
        return False
    started = process_start(pid)
    if started is None:
        return True  # no /proc to ask: keep it
    return started[1] not in "ZX" and started[0] <= changed + 2.0  # boot time is given in whole seconds


def process_start(pid: int) -> tuple[float, str] | None:
    """(start time as a Unix time, state letter) of a process, from Linux's /proc; None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), fields[0]
