"""The identities a server holds: one per layer folder in its layers directory, added, recompiled or removed live.

Names are checked before they touch the filesystem, so no request can reach outside the layers directory. A compile
runs in a background thread and is written to a hidden staging folder, prepared in the engine, and only then renamed
into place: a failed compile leaves the directory and the served identities exactly as they were.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credo.errors import CredoError, LayerError
from credo.fsutil import NotReplaceable, check_replaceable, remove_dir, swap_into, sweep_stale, temp_dir
from credo.layers import compile_layer, load_layer, save_layer
from credo.layers.folder import LAYER_JSON, MANIFESTO_FILE, list_layers
from credo.layers.registry import check_compile
from credo.manifesto import Manifesto

if TYPE_CHECKING:
    from credo.base import Base
    from credo.layers.layer import Layer, LayerInfo
    from credo.server.engines.base import ServeEngine
    from credo.server.worker import Worker

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# Held-out prompts for the fidelity figure shown after a compile: everyday requests no manifesto is written around.
FIDELITY_PROMPTS = ["How do I boil an egg?", "What should I read next?", "Explain what a budget is.", "Is it going to rain tomorrow?"]


class InvalidName(CredoError):
    """An identity name that is not a plain folder name."""


class NotFound(CredoError):
    """No such identity or job."""


class Conflict(CredoError):
    """The identity exists (and overwrite was not asked for) or is being compiled right now."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"identity name {name!r} is not allowed: use 1-64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return name


@dataclass
class Identity:
    name: str
    folder: Path
    info: LayerInfo | None
    status: str = "ready"  # ready | error
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": self.name,
            "status": self.status,
            "error": self.error or None,
            "kind": info.kind if info else None,
            "manifesto": info.manifesto.get("name") if info else None,
            "compile_seconds": info.compile_seconds if info else None,
            "created": info.created if info else None,
            "fidelity": _fidelity(info),
            "report": info.report if info else {},
        }


def _fidelity(info: LayerInfo | None) -> float | None:
    value = info.report.get("fidelity") if info else None
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class Job:
    """A compile in progress; `stage` is what the playground shows as progress."""

    id: str
    name: str
    kind: str
    stage: str = "queued"  # queued | compiling | measuring | saving | loading | ready | error
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "stage": self.stage,
            "error": self.error or None,
            "elapsed": round((self.finished or time.time()) - self.started, 2),
        }


class Identities:
    def __init__(self, base: Base, engine: ServeEngine, worker: Worker, layers_dir: Path, measure_fidelity: bool = True):
        self.base = base
        self.engine = engine
        self.worker = worker
        self.root = Path(layers_dir)
        self.measure_fidelity = measure_fidelity
        self.items: dict[str, Identity] = {}
        self.jobs: dict[str, Job] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="credo-compile")

    # --- reading ------------------------------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        folder = (self.root / check_name(name)).resolve()
        if folder.parent != self.root.resolve():
            raise InvalidName(f"identity name {name!r} is not allowed")
        return folder

    def load_all(self) -> None:
        """Add every layer folder in the directory; a folder that cannot be served is listed with its reason."""
        self.root.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.root)  # staging and temporary folders of a server or compile that was killed
        for path, info, status in list_layers(self.root):
            if not NAME.fullmatch(path.name):
                continue
            if info is None:
                self.items[path.name] = Identity(path.name, path, None, "error", status)
                continue
            try:
                self.add_folder(path.name)
            except CredoError as e:
                self.items[path.name] = Identity(path.name, path, info, "error", str(e))

    def add_folder(self, name: str) -> Identity:
        """Serve (or serve again) the layer folder `name` that sits in the layers directory."""
        folder = self.folder(name)
        layer = load_layer(folder, self.base)
        self.worker.call(lambda: self.engine.add(name, layer, folder))
        ident = Identity(name, self.folder(name), layer.info)
        self.items[name] = ident
        return ident

    def ready(self, name: str) -> Identity:
        ident = self.items.get(name)
        if ident is None:
            raise NotFound(f"no identity {name!r}; GET /v1/identities lists them")
        if ident.status != "ready":
            raise LayerError(f"identity {name!r} cannot be served: {ident.error}")
        return ident

    def get(self, name: str) -> Identity:
        check_name(name)
        if name not in self.items:
            raise NotFound(f"no identity {name!r}; GET /v1/identities lists them")
        return self.items[name]

    def manifesto_text(self, name: str) -> str:
        path = self.get(name).folder / MANIFESTO_FILE
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    # --- changing -----------------------------------------------------------------------------------------------
    def remove(self, name: str) -> None:
        ident = self.get(name)
        with self._lock:
            if name in self._busy:
                raise Conflict(f"identity {name!r} is being compiled; try again when the job ends")
            self.items.pop(name, None)
        self.worker.call(lambda: self.engine.remove(name))
        remove_dir(ident.folder)

    def start_compile(self, name: str, manifesto_text: str, kind: str, settings: dict[str, Any], overwrite: bool) -> Job:
        """Check everything a user can get wrong now (errors are 4xx), then compile in the background."""
        folder = self.folder(name)
        config_overrides = {k: str(v) if not isinstance(v, str) else v for k, v in settings.items()}
        check_compile(kind, config_overrides)
        manifesto = Manifesto.from_bytes(manifesto_text.encode("utf-8"), source=f"<{name}>")
        with self._lock:
            if name in self._busy:
                raise Conflict(f"identity {name!r} is being compiled already")
            if (folder.exists() or name in self.items) and not overwrite:
                raise Conflict(f"identity {name!r} exists; send overwrite=true to recompile it")
            try:
                check_replaceable(folder, LAYER_JSON)  # overwrite replaces a layer folder, never another one
            except NotReplaceable as e:
                raise Conflict(f"identity {name!r}: {e}") from None
            self._busy.add(name)
            job = Job(id=uuid.uuid4().hex[:12], name=name, kind=kind)
            self.jobs[job.id] = job
            self._trim_jobs()
        self._compiler.submit(self._compile, job, manifesto, config_overrides)
        return job

    def _compile(self, job: Job, manifesto: Any, overrides: dict[str, str]) -> None:
        staging = temp_dir(self.root / job.name, "staging")
        try:
            job.stage = "compiling"
            layer = self._on_base(lambda: compile_layer(manifesto, self.base, job.kind, overrides, name=job.name))
            if self.measure_fidelity:
                job.stage = "measuring"
                self._measure(layer)
            job.stage = "saving"
            save_layer(layer, staging / "layer", overwrite=False)
            job.stage = "loading"
            loaded = load_layer(staging / "layer", self.base)
            target = self.folder(job.name)
            self.worker.call(lambda: self.engine.add(job.name, loaded, staging / "layer"))
            swap_into(staging / "layer", target)
            self.items[job.name] = Identity(job.name, target, loaded.info)
            job.stage = "ready"
        except CredoError as e:
            job.stage, job.error = "error", str(e)
        except Exception as e:  # a compiler bug must not kill the server; the job says what happened
            job.stage, job.error = "error", f"{type(e).__name__}: {e}"
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            job.finished = time.time()
            with self._lock:
                self._busy.discard(job.name)
            job.done.set()

    def _on_base(self, fn: Any) -> Any:
        """Torch work on the base runs on the worker when generation uses the same torch model (hooks must not overlap)."""
        return self.worker.call(fn) if self.engine.shares_torch_base else fn()

    def _measure(self, layer: Layer) -> None:
        if layer.kind == "prompt":
            layer.info.report["fidelity"] = 1.0  # the prompt layer is the teacher itself
            return
        try:
            from credo.runtime.fidelity import measure
        except ImportError:
            return
        try:
            result = self._on_base(lambda: measure(self.base, layer.manifesto, {layer.name: layer}, FIDELITY_PROMPTS, max_tokens=16, progress=False))
            layer.info.report["fidelity"] = round(float(result.fidelity[layer.name]), 4)
        except Exception as e:  # the figure is informative; a failure to measure it must not fail the compile
            layer.info.report["fidelity_error"] = f"{type(e).__name__}: {e}"

    def _trim_jobs(self, keep: int = 100) -> None:
        for old in list(self.jobs)[: max(0, len(self.jobs) - keep)]:
            if self.jobs[old].done.is_set():
                del self.jobs[old]

    def job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise NotFound(f"no compile job {job_id!r}")
        return self.jobs[job_id]

    def close(self) -> None:
        self._compiler.shutdown(wait=False, cancel_futures=True)

