"""Synthetic-assistant junk: the phrases chat models leave in web text, matched as phrases, never as topic words.

Each rule has a stable id so a removed document says which rule fired and on what words. Topic words ("ethics",
"illegal", "AI") are deliberately absent: they would delete legitimate writing about those topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

_A = r"['’]"  # straight or curly apostrophe


@dataclass(frozen=True)
class JunkRule:
    id: str
    pattern: re.Pattern[str]
    why: str


def _rule(rule_id: str, why: str, *alternatives: str) -> JunkRule:
    return JunkRule(rule_id, re.compile(r"\b(?:" + "|".join(alternatives) + r")", re.IGNORECASE), why)


RULES: tuple[JunkRule, ...] = (
    _rule(
        "ai-self-reference", "a model describing itself as an AI",
        r"as an? (?:ai|artificial intelligence)(?: language)? (?:model|assistant|chatbot|system|developed|trained|created|program)",
        r"as an? (?:large )?language model\b",
        r"i{a}?m (?:just |only |merely )?an? (?:ai|artificial intelligence)(?: language)? (?:model|assistant|chatbot)".format(a=_A),
        r"i am (?:just |only |merely )?an? (?:ai|artificial intelligence)(?: language)? (?:model|assistant|chatbot)",
        r"as an ai,? i (?:do not|don{a}t|cannot|can{a}t|am not|have no)".format(a=_A),
    ),
    _rule(
        "refusal", "a templated refusal",
        (r"i (?:cannot|can{a}t|am unable to|{a}?m unable to|won{a}t be able to) "
         r"(?:fulfill|comply with|assist with|help with|complete|process) (?:that|this|your|such an?) (?:request|query|task)").format(a=_A),
        (r"i{a}?m sorry,? but i (?:cannot|can{a}t|am unable to|am not able to|won{a}t) "
         r"(?:help|assist|provide|fulfill|comply|generate|create|write)").format(a=_A),
        r"i am sorry,? but i (?:cannot|can{a}t|am unable to|am not able to) (?:help|assist|provide|fulfill|comply|generate|create|write)".format(a=_A),
        r"i apologi[sz]e,? but i (?:cannot|can{a}t|am unable to|am not able to) (?:help|assist|provide|fulfill|comply|generate|create|write)".format(a=_A),
        r"i (?:must|have to) (?:respectfully |politely )?decline (?:to (?:answer|help|assist|provide|fulfill)|this request|your request)",
        (r"(?:go(?:es)? against|violat(?:e|es|ing)|(?:is|be) against) (?:my|openai{a}s) "
         r"(?:programming|guidelines|content polic(?:y|ies)|usage polic(?:y|ies)|ethical guidelines)").format(a=_A),
        r"my programming (?:does not|doesn{a}t) (?:allow|permit)|my programming prevents me".format(a=_A),
    ),
    _rule(
        "knowledge-cutoff", "knowledge-cutoff boilerplate",
        r"(?:my|the) (?:knowledge|training(?: data)?) cut-?off",
        r"as of my (?:last|latest|most recent) (?:knowledge |training )?(?:update|training)",
        r"i (?:do not|don{a}t) have (?:access to )?real-time (?:information|data|access|updates)".format(a=_A),
        r"i (?:do not|don{a}t) have the ability to (?:browse|access) the internet".format(a=_A),
        r"my training data (?:only )?(?:goes|extends) (?:up )?(?:to|until)",
    ),
    _rule(
        "assistant-identity", "a named chat assistant introducing itself",
        r"i{a}?m chatgpt|i am chatgpt|(?:a large language model|an ai) trained by openai|i was (?:created|developed|trained|built) by openai".format(a=_A),
        r"i (?:do not|don{a}t) have (?:personal )?(?:feelings|emotions|consciousness|opinions|beliefs) (?:like|as|the way) humans? do".format(a=_A),
    ),
)


def find_junk(text: str) -> tuple[JunkRule, str] | None:
    """The first rule that fires on `text` and the words it matched, or None for clean text."""
    for rule in RULES:
        if m := rule.pattern.search(text):
            return rule, m.group(0)
    return None


class AssistantJunkFilter(BaseFilter):
    """Drop documents carrying assistant boilerplate; the reason names the rule and the matched words."""

    name = "🤖 Assistant junk"

    def __init__(self, exclusion_writer: DiskWriter | None = None) -> None:
        super().__init__(exclusion_writer)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        hit = find_junk(doc.text)
        if hit is None:
            return True
        rule, words = hit
        doc.metadata["junk_match"] = words
        return False, f"junk:{rule.id}"
