"""The processes that share one training run under `accelerate launch` or `torchrun` (data parallel, CPU gloo or GPU
NCCL): the one place trained kinds and the CLI ask which process they are, split work and agree on decisions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast, reduce

if TYPE_CHECKING:
    from credo.base import Base


@dataclass(frozen=True)
class Team:
    """The processes that share one training run (`accelerate launch`, `torchrun`; accelerate's state tells them
    apart). A team of one never communicates, so a single process computes exactly what it did before teams existed."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def of(cls, base: Base) -> Team:
        # cpu=True is what lets accelerate pick gloo for CPU processes; without it a CPU-only launch is taken for one process
        state = PartialState(cpu=base.device.type == "cpu")
        return cls(state.process_index, state.num_processes, base.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[Any]) -> list[Any]:
        """This process's share of `items` (every size-th one, from its rank): shares differ by at most one item."""
        return items[self.rank :: self.size]

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over the team (the same tensor on every process)."""
        return value if self.size == 1 else reduce(value.to(self.device), reduction="sum")

    def agree(self, value: float) -> float:
        """The main process's `value` on every process: clocks differ, and a decision taken on them must not."""
        if self.size == 1:
            return value
        return float(broadcast(torch.tensor([value], dtype=torch.float64, device=self.device), from_process=0).item())

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first, then the others: what it caches they read instead of computing."""
        if self.size == 1:
            yield
        else:
            with PartialState().main_process_first():
                yield
