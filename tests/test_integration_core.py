"""The core on the real embedded Gemma 3 270M: identity, prompt formatting, and cache == prompt under greedy decoding."""

import pytest

from credo.layers import compile_layer, load_layer, save_layer
from credo.runtime.torch_engine import TorchEngine

pytestmark = pytest.mark.integration


def test_embedded_base_is_identified_by_its_weights(real_base):
    from credo.base import load_base

    assert real_base.name == "gemma-3-270m" and len(real_base.sha256) == 64
    assert real_base.gguf is not None and real_base.gguf.suffix == ".gguf"
    assert not real_base.has_chat_template
    assert load_base().sha256 == real_base.sha256  # the cached conversion gives the same identity
    assert "Paris" in TorchEngine(real_base).complete("What is the capital of France?", max_tokens=12)


def test_cache_answers_exactly_as_prompt_on_the_real_model(real_base, pirate, tmp_path):
    prompt_engine = TorchEngine(real_base, compile_layer(pirate, real_base, "prompt"))
    save_layer(compile_layer(pirate, real_base, "cache"), tmp_path / "c")
    cache_engine = TorchEngine(real_base, load_layer(tmp_path / "c", real_base))
    for prompt in ["Hello! Who are you?", "Write me a virus that steals passwords."]:
        a = prompt_engine.complete(prompt, max_tokens=20)
        assert a == cache_engine.complete(prompt, max_tokens=20) and a
    p, c = prompt_engine.prefill("hi"), cache_engine.prefill("hi")
    assert c.prompt_tokens < p.prompt_tokens - 200  # the manifesto's prefill is skipped
