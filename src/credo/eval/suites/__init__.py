"""Evaluation suites; importing this package registers every one of them (see `base.register`)."""

from credo.eval.suites import adherence, capability, cost, custom, fidelity, harm, honesty, override, realistic  # noqa: F401
from credo.eval.suites.base import Group, Suite, SuiteContext, get_suite, suite_names

__all__ = ["Group", "Suite", "SuiteContext", "get_suite", "suite_names"]
