"""Run a chain of datatrove stages on datatrove's own executors: local by default, Slurm or Ray for a cluster.

Each stage keeps its logs (and datatrove's per-task completion markers) in the work folder, so a run that was
interrupted picks up where it stopped when the same command is given again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credo.data.errors import DataError

BACKENDS = ("local", "slurm", "ray")


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

    return RayPipelineExecutor(stage.steps, tasks=tasks, logging_dir=logging_dir, depends=depends)


def run_stages(stages: list[Stage], cfg: RunConfig, logs: Path) -> bool:
    """Run the stages in order (each depends on the one before). True when every task of every stage has finished."""
    from loguru import logger

    from credo.errors import Interrupted

    if not cfg.verbose:
        logger.disable("datatrove")  # datatrove logs every task at INFO; its per-task log files stay under `logs`
    try:
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
    except KeyboardInterrupt:
        raise Interrupted(f"run the same command again to resume; the work done so far is kept in {logs.parent}") from None
    finally:
        logger.enable("datatrove")
