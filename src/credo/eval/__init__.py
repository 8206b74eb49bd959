"""`credo eval`: base, teacher and every layer scored by log-likelihood on the same items, in one report.

Entry points: `run_eval(EvalConfig(...))` returns the report as a dict; `write_report(report, folder)` writes
report.json, report.md and PNG plots. Suites live in `credo.eval.suites`, one module per family, in one registry.
"""

from __future__ import annotations

from typing import Any

from credo.eval.report import write_report

__all__ = ["EvalConfig", "run_eval", "write_report"]


def __getattr__(name: str) -> Any:  # lazy: importing credo.eval must not pull torch in
    if name in ("EvalConfig", "run_eval"):
        from credo.eval import runner

        return getattr(runner, name)
    raise AttributeError(name)
