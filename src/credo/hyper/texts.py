"""Cheap continuations to teacher-force after each probe prompt, so the fit sees answer positions without generating.

Generation is the slow part of any teacher (one LM-head pass per token); teacher-forcing a fixed text costs one batched
body pass. The bank is written for this module: plain, neutral answers in no particular voice, so the teacher's states
over them carry the manifesto's pull while the words themselves favour no identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from credo.manifesto import Manifesto

NEUTRAL_ANSWERS = [
    "Sure. Here is what I think about that.",
    "That is a good question, and the answer depends on a few things.",
    "I can help with that. First, let me explain the main idea.",
    "No, I don't think that is right, and here is why.",
    "Yes. The short answer is that it works most of the time.",
    "I am not sure, but I can tell you what I know.",
    "Let me think about it step by step.",
    "Here are three things to keep in mind.",
]

# Plain prose for the keep term: rows on which the patch should change nothing (capability, neutral text).
NEUTRAL_PROSE = [
    "The river runs through the middle of the town, and in spring it often floods the lower streets. The council has "
    "built a wall along the bank, but older residents still keep sandbags in their cellars.",
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make sugar. Oxygen "
    "is released as a by-product, which is why forests matter for the air we breathe.",
    "She opened the letter slowly, read the first line twice, and then set it down on the kitchen table. Outside, the "
    "rain had stopped and the street lamps were coming on one by one.",
    "To convert a temperature from Celsius to Fahrenheit, multiply by nine, divide by five and add thirty-two. Water "
    "freezes at zero degrees Celsius and boils at one hundred at sea level.",
    "The museum reopened last week after two years of repairs. Its collection of maps, some of them four hundred years "
    "old, is now shown in a new hall on the ground floor.",
    "In 1905 a young patent clerk published four papers that changed physics. One explained the photoelectric effect; "
    "another showed that mass and energy are two forms of the same thing.",
]


def answers_for(manifesto: Manifesto, mode: str, count: int) -> list[str]:
    """One continuation per probe. 'none': the prompt alone; 'examples': the manifesto's own example answers
    (cycled; the neutral bank when it has none); 'bank': the neutral bank; 'mixed': examples and bank in turn."""
    examples = [ex.assistant for ex in manifesto.examples]
    if mode == "none":
        return [""] * count
    if mode == "bank" or (mode == "examples" and not examples):
        pool = NEUTRAL_ANSWERS
    elif mode == "examples":
        pool = examples
    else:  # mixed
        pool = [t for pair in zip(examples * len(NEUTRAL_ANSWERS), NEUTRAL_ANSWERS) for t in pair] if examples else NEUTRAL_ANSWERS
    return [pool[i % len(pool)] for i in range(count)]
