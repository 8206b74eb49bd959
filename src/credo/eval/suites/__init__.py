"""Evaluation suites, one module each; `base.SUITES` finds them (and plug-ins) when first asked."""

from credo.eval.suites.base import Group, Suite, SuiteContext, get_suite, suite_names

__all__ = ["Group", "Suite", "SuiteContext", "get_suite", "suite_names"]
