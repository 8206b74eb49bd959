"""Run a chain of datatrove stages on datatrove's own executors: local by default, Slurm or Ray for a cluster.

Each stage keeps its logs (and datatrove's per-task completion markers) in the work folder, so a run that was
interrupted picks up where it stopped when the same command is given again.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from credo.data.errors import DataError
from credo.errors import Interrupted

BACKENDS = ("local", "slurm", "ray")
RESUME = "run the same command again to resume"
T = TypeVar("T")


@dataclass
class RunConfig:
    """How to run: `backend` picks the executor, `tasks` how many shards, `workers` how many at once (local)."""

    backend: str = "local"
    tasks: int = 1
    workers: int = 1
    verbose: bool = False
    slurm: dict[str, Any] = field(default_factory=lambda: {"time": "4:00:00", "partition": "cpu"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise DataError(f"unknown executor {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.tasks < 1 or self.workers < 1:
            raise DataError("--tasks and --workers must be at least 1")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:  # found, not imported: Ray is slow to import
            raise DataError("the ray executor needs Ray, which is not installed: pip install ray")


@dataclass
class Stage:
    """One executor's worth of work: a name (its log folder), the steps, and how many tasks it needs."""

    name: str
    steps: list[Any]
    tasks: int | None = None  # None: RunConfig.tasks


def _executor(stage: Stage, cfg: RunConfig, logs: Path, depends: Any) -> Any:
    tasks = stage.tasks or cfg.tasks
    logging_dir = str(logs / stage.name)
    if cfg.backend == "local":
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(stage.steps, tasks=tasks, workers=min(cfg.workers, tasks), logging_dir=logging_dir,
                                     depends=depends, start_method="spawn")
    if cfg.backend == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(stage.steps, tasks=tasks, logging_dir=logging_dir, depends=depends,
                                     job_name=f"credo-{stage.name}", **cfg.slurm)
    from datatrove.executor import RayPipelineExecutor

    # the cluster is the one ray.init() joined (RAY_ADDRESS) or, with none, a local one on this machine's cores
    return RayPipelineExecutor(stage.steps, tasks=tasks, logging_dir=logging_dir, depends=depends)


def stop_children(timeout: float = 5.0) -> None:
    """Stop the executor's child processes. datatrove's local executor starts a multiprocess Manager per stage; Ctrl-C
    while one starts leaves its server running with no finalizer (it ignores SIGINT), and multiprocess joins every
    child at exit without a timeout, so the interrupted command would hang instead of exiting."""
    mp = sys.modules.get("multiprocess")
    if mp is None:
        return
    children = mp.active_children()
    for p in children:
        p.terminate()
    for p in children:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join(timeout)


def resumable(run: Callable[[], T], hint: str = RESUME) -> T:
    """Run `run`; Ctrl-C anywhere in it becomes one `Interrupted(hint)`, raised only after the child processes are
    stopped (so the exit cannot hang) and the interrupted frames are freed (so no progress bar prints after it)."""
    try:
        return run()
    except Interrupted:
        raise
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:  # Python 3.11 wraps a Ctrl-C that lands while a class is created (mid-import) in this
        if not isinstance(e.__cause__, KeyboardInterrupt):
            raise
    stop_children()
    gc.collect()
    sys.stderr.flush()
    raise Interrupted(hint)  # outside the handler: no chained traceback keeps the interrupted generators alive


def _run(stages: list[Stage], cfg: RunConfig, logs: Path) -> bool:
    executors: list[Any] = []
    for stage in stages:
        executors.append(_executor(stage, cfg, logs, executors[-1] if executors else None))
    if not executors:
        return True
    if cfg.backend == "slurm":
        executors[-1].run()  # submits the chain with Slurm dependencies and returns
    else:
        for ex in executors:  # local and Ray run synchronously; an already finished stage returns at once
            ex.run()
    return all(not ex.get_incomplete_ranks(range(ex.world_size)) for ex in executors)


def run_stages(stages: list[Stage], cfg: RunConfig, logs: Path) -> bool:
    """Run the stages in order (each depends on the one before). True when every task of every stage has finished."""
    from loguru import logger

    if not cfg.verbose:
        logger.disable("datatrove")  # datatrove logs every task at INFO; its per-task log files stay under `logs`
    try:
        return resumable(lambda: _run(stages, cfg, logs), f"{RESUME}; the work done so far is kept in {logs.parent}")
    finally:
        logger.enable("datatrove")
