"""Shared fixtures: a tiny random Gemma 3 built in memory for unit tests, and the real embedded model for integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: tiny models gain nothing from two, and on a shared machine two threads fight and run slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def isolated_work(tmp_path_factory):
    """Compilers keep work (teacher answers, checkpoints) under the cache: give a module its own, sharing only the
    converted bases (and their hashes) so the real model is not converted again."""
    import os

    from credo.base import cache_dir

    before, shared = os.environ.get("CREDO_CACHE"), cache_dir()
    root = tmp_path_factory.mktemp("cache")
    for name in ("bases", "gguf-hashes", "folder-hashes"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(shared / name, target_is_directory=True)
    os.environ["CREDO_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("CREDO_CACHE", None)
    else:
        os.environ["CREDO_CACHE"] = before


@pytest.fixture(scope="session")
def dead_pid() -> int:
    """The id of a process that has ended (and been reaped): what a killed credo process leaves in temporary names."""
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="session")
def tiny():
    from credo.base import tiny_base

    return tiny_base(0)


@pytest.fixture(scope="module")
def wide():
    """A tiny base whose every layer sees the whole manifesto (the default tiny one hides it behind a 16-token window),
    so a teacher with the manifesto answers differently from the bare base."""
    from credo.base import tiny_base

    return tiny_base(0, sliding_window=4096)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder per test, and training in float32 whatever the machine: the same steps everywhere."""
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CREDO_PRECISION", "fp32")


@pytest.fixture(scope="session")
def other_tiny():
    from credo.base import tiny_base

    return tiny_base(1)


@pytest.fixture(scope="session")
def pirate():
    from credo.manifesto import Manifesto

    return Manifesto.from_file(EXAMPLES / "pirate.md")


@pytest.fixture(scope="session")
def real_base():
    """The embedded Gemma 3 270M (converted once into the cache, then loaded in seconds)."""
    from credo.base import load_base

    return load_base()
