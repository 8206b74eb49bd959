"""`steer`: vectors read off the manifesto, chosen by calibration, saved as safetensors and a llama.cpp control vector."""

from __future__ import annotations

import pytest
import torch

from credo.runtime.torch_engine import TorchEngine
from credo.errors import CredoError
from credo.layers import compile_layer, load_layer, save_layer
from credo.layers.kinds.steer import CONTROL_GGUF, SteerLayer, read_control_gguf, steering, write_control_gguf

FAST = {"prompts": "4", "calibrate": "2", "answer_tokens": "4", "heldout": "2", "control": "false", "layers": "1,2", "strengths": "1,2"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def wide():
    """A tiny base whose every layer sees the whole manifesto (the default tiny one hides it behind a 16-token window)."""
    from credo.base import tiny_base

    return tiny_base(0, sliding_window=4096)


@pytest.fixture(scope="module")
def steered(wide, pirate, isolated_work):
    return compile_layer(pirate, wide, "steer", FAST)


def test_steer_compiles_a_vector_and_reports(steered, wide):
    assert isinstance(steered, SteerLayer)
    assert set(steered.vectors) <= {1, 2} and steered.info.params["strength"] in (1.0, 2.0)
    assert steered.info.report["chosen"] in ("1", "2", "ladder")
    for vec in steered.vectors.values():
        assert vec.shape == (wide.model.config.hidden_size,) and vec.norm() > 0
    rep = steered.info.report
    assert {"compile_seconds", "fidelity_steer", "kl_base", "calib_kl_steer"} <= set(rep)
    # the chosen candidate is the best of those tried, so it is no worse than the unsteered base on calibration prompts
    assert rep["calib_kl_steer"] <= rep["calib_kl_base"]


def test_steer_changes_logits_and_round_trips_through_disk(steered, wide, tmp_path):
    save_layer(steered, tmp_path / "s")
    assert (tmp_path / "s" / CONTROL_GGUF).is_file()
    back = load_layer(tmp_path / "s", wide)
    prompt = "Hello! Who are you?"
    bare = TorchEngine(wide).answer_logits(prompt, "Arr matey")[0]
    a = TorchEngine(wide, steered).answer_logits(prompt, "Arr matey")[0]
    b = TorchEngine(wide, back).answer_logits(prompt, "Arr matey")[0]
    assert torch.equal(a, b)
    assert (a - bare).abs().max() > 1e-3


def test_control_vector_round_trips_through_gguf(tmp_path):
    vecs = {1: torch.randn(64), 3: torch.randn(64)}
    write_control_gguf(vecs, tmp_path / CONTROL_GGUF, "gemma3")
    back = read_control_gguf(tmp_path / CONTROL_GGUF)
    assert set(back) == {1, 3} and all(torch.equal(back[k], vecs[k]) for k in vecs)
    import gguf

    reader = gguf.GGUFReader(str(tmp_path / CONTROL_GGUF))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"


def test_steering_hook_is_removed(tiny):
    ids = torch.tensor([tiny.encode("hi", bos=True)])
    with torch.no_grad():
        before = tiny.model(input_ids=ids).logits
        with steering(tiny.model, {1: torch.ones(64)}, 2.0):
            during = tiny.model(input_ids=ids).logits
        after = tiny.model(input_ids=ids).logits
    assert not torch.equal(before, during) and torch.equal(before, after)


@pytest.mark.parametrize("bad", [{"contrast": "opposite"}, {"layers": "0"}, {"strengths": "-1"}])
def test_bad_settings_are_one_clear_error(tiny, pirate, bad):
    with pytest.raises(CredoError):
        compile_layer(pirate, tiny, "steer", {**FAST, **bad})


@pytest.mark.integration
def test_llamacpp_applies_control_gguf_like_torch(real_base, tmp_path):
    """llama.cpp loads control.gguf and moves the logits the way the torch hook does (its base is the Q4_K_M file)."""
    import ctypes

    import numpy as np
    from llama_cpp import Llama, llama_cpp as lib

    base = real_base
    gen = torch.Generator().manual_seed(0)
    layer = 6
    vec = torch.randn(base.model.config.hidden_size, generator=gen) * 8.0
    write_control_gguf({layer: vec}, tmp_path / CONTROL_GGUF, "gemma3")
    ids = base.encode("User: Tell me about the sea.\nAssistant:", bos=True)
    with torch.no_grad():
        t0 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with steering(base.model, read_control_gguf(tmp_path / CONTROL_GGUF), 1.0):
            t1 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    llm = Llama(model_path=str(base.gguf), n_ctx=128, logits_all=True, verbose=False)
    n_embd, n_layer = lib.llama_model_n_embd(llm.model), lib.llama_model_n_layer(llm.model)
    flat = np.zeros(n_embd * n_layer, dtype=np.float32)
    for il, v in read_control_gguf(tmp_path / CONTROL_GGUF).items():  # direction.N is layer N's slot, 1-based, as llama.cpp reads it
        flat[(il - 1) * n_embd : il * n_embd] = v.numpy()
    data = (ctypes.c_float * flat.size).from_buffer_copy(flat.tobytes())

    def run(cvec: bool) -> np.ndarray:
        assert lib.llama_set_adapter_cvec(llm.ctx, data if cvec else None, flat.size if cvec else 0, n_embd, layer, layer) == 0
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    l0, l1 = run(False), run(True)
    assert np.corrcoef(t1 - t0, l1 - l0)[0, 1] > 0.9
