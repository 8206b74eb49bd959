"""Paired differences: two rows of one report answer the same items, so a row's difference from the base is measured
item by item, and its interval is set by the items the two disagree on: far tighter than two independent figures
(a 2-point HellaSwag change needs ~4,500 unpaired items, often a few hundred paired)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

Z = 1.96  # 95% two-sided


def paired(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Mean of x - y, item by item, and the half-width of its 95% interval."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"paired needs two equal-length sequences of at least 2 items, got {len(x)} and {len(y)}")
    d = [a - b for a, b in zip(x, y)]
    return statistics.fmean(d), Z * statistics.stdev(d) / math.sqrt(len(d))


def shifts(metrics: dict[str, Any] | None) -> list[float]:
    """The per-item sycophancy shifts of a row's sycophancy metrics, every file's in turn (reports from 12-07 on)."""
    return [x for v in (metrics or {}).values() if isinstance(v, dict) for x in v.get("shifts", [])]
