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
    "The village lies at the foot of a long valley where sheep graze on the lower slopes. Most of the houses are built "
    "of grey stone, and the church tower can be seen from every farm around it.",
    "A balanced diet includes vegetables, fruit, whole grains and a source of protein such as beans, fish or eggs. "
    "Doctors also advise drinking water regularly and limiting sugar and salt.",
    "The train left the station ten minutes late. He found a seat by the window, took out a newspaper and watched the "
    "suburbs give way to fields, then to woods, then to the sea.",
    "The country has a mild climate, with wet winters and dry summers. Its economy depends on farming, fishing and, "
    "more recently, on tourism along the southern coast.",
    "To bake bread, mix flour, water, salt and yeast, knead the dough for ten minutes and let it rise for an hour. "
    "Shape it, let it rise again, and bake it in a hot oven until the crust is brown.",
    "The committee met on Tuesday to discuss the new budget. After a long debate, the members agreed to spend more on "
    "schools and roads and to delay the plan for a new library.",
    "Owls hunt mostly at night. Their large eyes gather what little light there is, and their soft feathers let them "
    "fly almost without a sound as they search the fields for mice.",
    "The old clock in the hall had stopped years ago, but nobody in the family wanted to have it repaired. It stood "
    "there at twenty past four, as it had on the day their grandfather died.",
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
