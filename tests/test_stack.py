"""Stacking: a second manifesto compiled on top of a layer loads as one layer, and exports as one adapter."""

from __future__ import annotations

import pytest
import torch

from credo.errors import CredoError
from credo.layers import compile_layer, load_layer, save_layer
from credo.layers.control import ControlVector
from credo.layers.kinds.stack import StackLayer, compile_on
from credo.layers.lora import LoraWeights, lora_hooks
from credo.manifesto import Manifesto
from credo.runtime.torch_engine import TorchEngine

STEER = {"prompts": "4", "calibrate": "2", "answer_tokens": "4", "heldout": "2", "control": "false", "layers": "1,2", "strengths": "1,2"}
DISTILL = {"prompts": "4", "batch": "2", "answer_tokens": "4", "topk": "8", "r": "4", "alpha": "8", "heldout": "0", "control": "false", "budget": "2"}
EXTRA = Manifesto.from_text("# Nuance\n\n- Keep every answer under twenty words.\n", source="extra.md")
PROMPT, ANSWER = "Hello! Who are you?", "Arr matey"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CREDO_PRECISION", "fp32")  # distill trains in float32 whatever the machine: the same steps everywhere


def logits(base, layer):
    return TorchEngine(base, layer).answer_logits(PROMPT, ANSWER)[0]



def test_steer_on_steer_loads_as_one_and_merges_the_control_vector(wide, pirate, tmp_path):
    tiny = wide
    save_layer(compile_layer(pirate, tiny, "steer", STEER), tmp_path / "low")
    stack = compile_on(EXTRA, tiny, tmp_path / "low", "steer", STEER)
    assert stack.kind == "stack" and stack.info.params["chain"] == ["steer", "steer"]
    assert "fidelity_steer" in stack.info.report  # measured against the lower identity
    save_layer(stack, tmp_path / "st")
    back = load_layer(tmp_path / "st", tiny)
    assert isinstance(back, StackLayer) and back.lower.kind == "steer" and back.upper.kind == "steer"
    torch.testing.assert_close(logits(tiny, stack), logits(tiny, back), atol=1e-5, rtol=1e-5)
    assert (logits(tiny, back) - logits(tiny, back.lower)).abs().max() > 1e-4  # the upper layer does something
    merged = ControlVector.from_gguf(tmp_path / "st" / ControlVector.GGUF_FILE).vectors
    want: dict[int, torch.Tensor] = {}
    for part in (back.lower, back.upper):
        for i, v in part.vectors.items():
            want[i] = want.get(i, torch.zeros_like(v)) + part.strength * v
    assert set(merged) == set(want) and all(torch.allclose(merged[i], want[i]) for i in want)


def test_distill_on_distill_merges_into_one_exact_lora(tiny, pirate, tmp_path):
    save_layer(compile_layer(pirate, tiny, "distill", DISTILL), tmp_path / "low")
    stack = compile_on(EXTRA, tiny, tmp_path / "low", "distill", DISTILL)
    save_layer(stack, tmp_path / "st")
    back = load_layer(tmp_path / "st", tiny)
    merged = LoraWeights.from_peft(tmp_path / "st")
    assert merged.r == 8
    ids = torch.tensor([tiny.encode("Hello there", bos=True)])
    with torch.no_grad():
        with back.applied(tiny.model):
            both = tiny.model(input_ids=ids).logits
        with lora_hooks(tiny.model, merged):
            one = tiny.model(input_ids=ids).logits
    torch.testing.assert_close(both, one, atol=1e-4, rtol=1e-4)
    assert (tmp_path / "st" / "lora.gguf").is_file()


def test_prompt_on_a_layer_concatenates_contexts(tiny, pirate, tmp_path):
    save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "low")
    stack = compile_on(EXTRA, tiny, tmp_path / "low", "prompt")
    assert stack.context(tiny).startswith(stack.lower.context(tiny)) and "twenty words" in stack.context(tiny)


def test_cli_compile_on_and_its_errors(tiny, pirate, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from credo.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "extra.md").write_text(EXTRA.text)
    save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "low")
    run = CliRunner().invoke(app, ["compile", "extra.md", "--base", "tiny:0", "--on", "low", "-o", "st"])
    assert run.exit_code == 0, run.output
    assert isinstance(load_layer(tmp_path / "st", tiny), StackLayer)
    with pytest.raises(CredoError, match="not a layer folder|does not exist"):
        CliRunner().invoke(app, ["compile", "extra.md", "--base", "tiny:0", "--on", "nowhere", "-o", "x"], catch_exceptions=False)
    with pytest.raises(CredoError, match="budget"):
        CliRunner().invoke(app, ["compile", "extra.md", "--kind", "distill", "--budget", "soon", "-o", "y"], catch_exceptions=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cache_cannot_be_stacked(tiny, pirate, tmp_path):
    save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "low")
    with pytest.raises(CredoError, match="cannot be stacked"):
        compile_on(EXTRA, tiny, tmp_path / "low", "cache")
