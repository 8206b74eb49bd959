"""The shared LoRA payload: hooks, PEFT files and the llama.cpp GGUF all describe the same adapter."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from credo.base import tiny_base
from credo.errors import LayerError
from credo.layers.lora import LoraWeights, lora_hooks


@pytest.fixture(scope="module")
def base():
    return tiny_base(0)


def random_lora(model: torch.nn.Module, r: int = 4) -> LoraWeights:
    w = LoraWeights.init(model, r=r, alpha=2 * r, seed=1)
    gen = torch.Generator().manual_seed(2)
    for m in w.modules:
        w.b[m] = torch.randn(w.b[m].shape, generator=gen) * 0.2  # B is zero at init; make the adapter do something
    return w


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_hooks_change_logits_and_leave_base_untouched(base):
    w = random_lora(base.model)
    ids = torch.tensor([base.encode("hello there", bos=True)])
    before = logits(base.model, ids)
    sd = {k: v.clone() for k, v in base.model.state_dict().items()}
    with lora_hooks(base.model, w):
        during = logits(base.model, ids)
    after = logits(base.model, ids)
    assert (during - before).abs().max() > 1e-2
    assert torch.equal(before, after)
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in sd.items())


def test_hooks_match_merged_weights(base):
    w = random_lora(base.model)
    ids = torch.tensor([base.encode("merge me", bos=True)])
    with lora_hooks(base.model, w):
        hooked = logits(base.model, ids)
    merged = copy.deepcopy(base.model)
    with torch.no_grad():
        for m in w.modules:
            merged.get_submodule(m).weight += w.delta(m)
    torch.testing.assert_close(hooked, logits(merged, ids), atol=1e-4, rtol=1e-4)


def test_peft_roundtrip_same_logits_as_peft(base, tmp_path):
    from peft import PeftModel

    w = random_lora(base.model)
    w.to_peft(tmp_path)
    back = LoraWeights.from_peft(tmp_path)
    assert back.r == w.r and back.alpha == w.alpha and back.modules == w.modules
    assert all(torch.equal(back.a[m], w.a[m]) and torch.equal(back.b[m], w.b[m]) for m in w.modules)
    ids = torch.tensor([base.encode("peft check", bos=True)])
    with lora_hooks(base.model, back):
        ours = logits(base.model, ids)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(tmp_path))
    torch.testing.assert_close(ours, logits(peft_model, ids), atol=1e-4, rtol=1e-4)


def test_gguf_roundtrip(base, tmp_path):
    w = random_lora(base.model)
    w.to_gguf(tmp_path / "lora.gguf")
    back = LoraWeights.from_gguf(tmp_path / "lora.gguf")
    assert back.arch == "gemma3" and back.alpha == w.alpha and back.modules == w.modules
    for m in w.modules:
        assert torch.equal(back.a[m], w.a[m]) and torch.equal(back.b[m], w.b[m])


def test_corrupt_adapter_is_one_clear_error(base, tmp_path):
    w = random_lora(base.model)
    w.to_peft(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"r": 3, "lora_alpha": 8}')
    with pytest.raises(LayerError, match="rank"):
        LoraWeights.from_peft(tmp_path)
    (tmp_path / "adapter_config.json").write_text('{"r": 4, "lora_al')
    with pytest.raises(LayerError, match="cannot read the PEFT adapter") as e:
        LoraWeights.from_peft(tmp_path)
    assert "\n" not in str(e.value)


def corrupt(path: Path, keep: int) -> bytes:
    """Cut a file to its first `keep` bytes, as an interrupted copy would; returns what is left."""
    data = path.read_bytes()[:keep]
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("keep", [0, 10, 200])
def test_corrupt_gguf_is_one_clear_error_and_writes_nothing(base, tmp_path, keep):
    w = random_lora(base.model)
    w.to_gguf(tmp_path / "lora.gguf")
    left = corrupt(tmp_path / "lora.gguf", keep)
    with pytest.raises(LayerError, match="cannot read LoRA adapter") as e:
        LoraWeights.from_gguf(tmp_path / "lora.gguf")
    assert "\n" not in str(e.value)
    assert [f.name for f in tmp_path.iterdir()] == ["lora.gguf"] and (tmp_path / "lora.gguf").read_bytes() == left


def test_a_control_vector_is_not_a_lora(tmp_path):
    from credo.layers.control import ControlVector

    ControlVector({1: torch.ones(8)}).to_gguf(tmp_path / "control.gguf")
    with pytest.raises(LayerError, match="cannot read LoRA adapter"):
        LoraWeights.from_gguf(tmp_path / "control.gguf")


def test_failed_gguf_write_keeps_the_old_file(base, tmp_path, monkeypatch):
    import gguf

    w = random_lora(base.model)
    w.to_gguf(tmp_path / "lora.gguf")
    before = (tmp_path / "lora.gguf").read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", broken)  # the header is on disk by then
    w.alpha = 99.0
    with pytest.raises(OSError, match="disk full"):
        w.to_gguf(tmp_path / "lora.gguf")
    assert [f.name for f in tmp_path.iterdir()] == ["lora.gguf"] and (tmp_path / "lora.gguf").read_bytes() == before


@pytest.mark.integration
def test_llamacpp_loads_lora_gguf_and_agrees_with_torch(real_base, tmp_path):
    """llama.cpp loads lora.gguf (on its Q4_K_M base) and shifts the logits as the torch hooks do."""
    import numpy as np
    from llama_cpp import Llama

    base = real_base
    w = LoraWeights.init(base.model, r=4, alpha=8, seed=1)
    gen = torch.Generator().manual_seed(2)
    for m in w.modules:
        w.b[m] = torch.randn(w.b[m].shape, generator=gen) * 0.02
    w.to_gguf(tmp_path / "lora.gguf")
    ids = base.encode("User: Tell me about the sea.\nAssistant:", bos=True)
    with torch.no_grad():
        t0 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with lora_hooks(base.model, w):
            t1 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()

    def run(lora: bool) -> np.ndarray:
        kw = {"lora_path": str(tmp_path / "lora.gguf")} if lora else {}
        llm = Llama(model_path=str(base.gguf), n_ctx=128, logits_all=True, verbose=False, **kw)
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    l0, l1 = run(False), run(True)
    assert np.corrcoef(t1 - t0, l1 - l0)[0, 1] > 0.9
