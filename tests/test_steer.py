"""`steer`: vectors read off the manifesto, chosen by calibration, saved as safetensors and a llama.cpp control vector."""

from __future__ import annotations

import pytest
import torch

from credo.errors import CredoError, LayerError
from credo.layers import compile_layer, load_layer, save_layer
from credo.layers.control import ControlVector
from credo.layers.kinds.steer import CONTROL_GGUF, VECTORS_FILE, SteerLayer, steering
from credo.runtime.torch_engine import TorchEngine

FAST = {"prompts": "4", "calibrate": "2", "answer_tokens": "4", "heldout": "2", "control": "false", "layers": "1,2", "strengths": "1,2"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))



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
    assert {"report_seconds", "fidelity_steer", "kl_base", "calib_kl_steer"} <= set(rep) and steered.info.compile_seconds > 0
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


def test_steer_layer_holds_its_control_vector(steered, wide, tmp_path):
    save_layer(steered, tmp_path / "s")
    back = load_layer(tmp_path / "s", wide)
    assert back.control.strength == steered.info.params["strength"] and back.control.model_hint == "gemma3"
    assert set(back.control.vectors) == set(steered.vectors)
    assert all(torch.equal(back.control.vectors[k], v) for k, v in steered.vectors.items())
    served = ControlVector.from_gguf(tmp_path / "s" / CONTROL_GGUF, back.strength)  # what llama.cpp loads, at the strength it is served with
    assert all(torch.equal(served.scaled()[k], v) for k, v in back.control.scaled().items())


def test_control_vector_round_trips_through_gguf(tmp_path):
    cv = ControlVector({1: torch.randn(64), 3: torch.randn(64)}, strength=1.5, model_hint="gemma3")
    cv.to_gguf(tmp_path / CONTROL_GGUF)
    back = ControlVector.from_gguf(tmp_path / CONTROL_GGUF, strength=1.5)
    assert back.model_hint == "gemma3" and back.strength == 1.5
    assert set(back.vectors) == {1, 3} and all(torch.equal(back.vectors[k], cv.vectors[k]) for k in cv.vectors)
    import gguf

    reader = gguf.GGUFReader(str(tmp_path / CONTROL_GGUF))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"


def test_control_vector_round_trips_through_safetensors(tmp_path):
    cv = ControlVector({2: torch.randn(64), 5: torch.randn(64)}, strength=2.5)
    cv.save(tmp_path / VECTORS_FILE)
    back = ControlVector.load(tmp_path / VECTORS_FILE)
    assert back.strength == 2.5 and set(back.vectors) == {2, 5} and all(torch.equal(back.vectors[k], cv.vectors[k]) for k in cv.vectors)


def test_combined_control_vector_is_the_scaled_sum():
    a, b = ControlVector({1: torch.randn(8), 2: torch.randn(8)}, 2.0), ControlVector({2: torch.randn(8)}, 0.5)
    both = ControlVector.combined([a, b])
    assert both.strength == 1.0 and set(both.vectors) == {1, 2}
    assert torch.allclose(both.vectors[1], 2.0 * a.vectors[1]) and torch.allclose(both.vectors[2], 2.0 * a.vectors[2] + 0.5 * b.vectors[2])


@pytest.mark.parametrize("keep", [0, 10, 100])
def test_corrupt_control_files_are_one_clear_error(tmp_path, keep):
    cv = ControlVector({1: torch.randn(64)})
    cv.to_gguf(tmp_path / CONTROL_GGUF)
    cv.save(tmp_path / VECTORS_FILE)
    for name in (CONTROL_GGUF, VECTORS_FILE):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:keep])
    with pytest.raises(LayerError, match="cannot read control vector") as e:
        ControlVector.from_gguf(tmp_path / CONTROL_GGUF)
    assert "\n" not in str(e.value)
    with pytest.raises(LayerError, match="cannot read steering vectors") as e:
        ControlVector.load(tmp_path / VECTORS_FILE)
    assert "\n" not in str(e.value)


def test_a_lora_is_not_a_control_vector(tiny, tmp_path):
    from credo.layers.lora import LoraWeights

    LoraWeights.init(tiny.model, r=2).to_gguf(tmp_path / "lora.gguf")
    with pytest.raises(LayerError, match="not a control vector"):
        ControlVector.from_gguf(tmp_path / "lora.gguf")


def test_layer_zero_cannot_be_written(tmp_path):
    with pytest.raises(LayerError, match="layer 0"):
        ControlVector({0: torch.ones(4)}).to_gguf(tmp_path / CONTROL_GGUF)
    assert list(tmp_path.iterdir()) == []


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
    from llama_cpp import Llama
    from llama_cpp import llama_cpp as lib

    base = real_base
    gen = torch.Generator().manual_seed(0)
    layer = 6
    vec = torch.randn(base.model.config.hidden_size, generator=gen) * 8.0
    ControlVector({layer: vec}).to_gguf(tmp_path / CONTROL_GGUF)
    ids = base.encode("User: Tell me about the sea.\nAssistant:", bos=True)
    with torch.no_grad():
        t0 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with steering(base.model, ControlVector.from_gguf(tmp_path / CONTROL_GGUF).vectors, 1.0):
            t1 = base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    llm = Llama(model_path=str(base.gguf), n_ctx=128, logits_all=True, verbose=False)
    n_embd, n_layer = lib.llama_model_n_embd(llm.model), lib.llama_model_n_layer(llm.model)
    flat = np.zeros(n_embd * n_layer, dtype=np.float32)
    for il, v in ControlVector.from_gguf(tmp_path / CONTROL_GGUF).vectors.items():  # direction.N is layer N's slot, 1-based, as llama.cpp reads it
        flat[(il - 1) * n_embd : il * n_embd] = v.numpy()
    data = (ctypes.c_float * flat.size).from_buffer_copy(flat.tobytes())

    def run(cvec: bool) -> np.ndarray:
        assert lib.llama_set_adapter_cvec(llm.ctx, data if cvec else None, flat.size if cvec else 0, n_embd, layer, layer) == 0
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    l0, l1 = run(False), run(True)
    assert np.corrcoef(t1 - t0, l1 - l0)[0, 1] > 0.9
