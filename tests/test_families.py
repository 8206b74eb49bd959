"""Nothing in credo is Gemma-only: every kind compiles, saves, loads and changes what the model says on tiny random
Llama, Qwen 2, Qwen 3 and Gemma 2 models, as it does on the Gemma 3 the other tests use (issue #25)."""

from __future__ import annotations

import pytest
import torch

from credo.base import TINY_FAMILIES, load_base, tiny_base
from credo.errors import BaseModelError
from credo.layers import compile_layer, load_layer, save_layer
from credo.runtime.torch_engine import TorchEngine

pytestmark = pytest.mark.usefixtures("isolated_work", "one_thread")  # one cache per module: each family writes its keep text once

FAMILIES = [f for f in TINY_FAMILIES if f != "gemma3"]  # Gemma 3 is what every other test runs on
FAST = {
    "prompt": {}, "cache": {},
    "steer": {"heldout": "0", "control": "false"},
    "distill": {"budget": "2", "prompts": "4", "batch": "2", "answer_tokens": "4", "heldout": "0", "control": "false", "validate": "0"},
    "hyper": {"probes": "4", "chat_probes": "0", "report": "false", "answer_tokens": "4"},
}
QUESTION = "Who are you?"


@pytest.fixture(scope="module", params=FAMILIES)
def family_base(request):
    return tiny_base(0, sliding_window=4096, family=request.param)


@pytest.mark.parametrize("kind", list(FAST))
def test_every_kind_round_trips_and_moves_the_model(family_base, pirate, kind, tmp_path):
    layer = compile_layer(pirate, family_base, kind, FAST[kind])
    back = load_layer(save_layer(layer, tmp_path / kind), family_base)
    bare, _ = TorchEngine(family_base).answer_logits(QUESTION, " Aye")
    before, _ = TorchEngine(family_base, layer).answer_logits(QUESTION, " Aye")
    after, _ = TorchEngine(family_base, back).answer_logits(QUESTION, " Aye")
    assert torch.allclose(before, after, atol=1e-5)  # the folder holds the whole layer
    assert (before - bare).abs().max() > 1e-4  # and the layer does something on this family


def test_a_stack_serves_on_every_family(family_base, pirate, tmp_path):
    low = save_layer(compile_layer(pirate, family_base, "steer", FAST["steer"]), tmp_path / "low")
    stack = compile_layer(pirate, family_base, "prompt", on=low)
    assert stack.kind == "stack" and [p.kind for p in stack.parts()] == ["steer", "prompt"]
    text = TorchEngine(family_base, load_layer(save_layer(stack, tmp_path / "st"), family_base)).complete(QUESTION, max_tokens=4)
    assert isinstance(text, str)


def test_a_tiny_base_by_spec_and_a_bad_family_is_one_line():
    assert load_base("tiny-llama:3").name == "tiny-llama-3" and load_base("tiny:0").name == "tiny-0"
    with pytest.raises(BaseModelError, match="no tiny model of family 'falcon'"):
        load_base("tiny-falcon:0")
