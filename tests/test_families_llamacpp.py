"""The llama.cpp path on every tiny family (#25): the tiny base written as a GGUF (credo.tiny_gguf) computes in llama.cpp
what it computes in torch, a `lora.gguf` and a `control.gguf` move llama.cpp's logits as torch's hooks move torch's, and
the llama.cpp serving engine answers with a compiled layer as the torch engine does.

Tolerances (measured on this machine, ten times the worst case here): llama.cpp runs these float32 models with a
float32 KV cache to ~1e-6 of the logits' scale (Llama, Qwen 2, Qwen 3); Gemma's GELU goes through ggml's float16 lookup
table on CPU, which alone leaves ~1e-4 of the scale (torch with the same float16 rounding of GELU agrees to 2e-5).
"""

from __future__ import annotations

import copy
import ctypes
import threading

import numpy as np
import pytest
import torch

from credo.base import TINY_FAMILIES, Base, tiny_base, weights_sha256
from credo.errors import BaseModelError
from credo.layers.control import ControlVector
from credo.layers.kinds.steer import steering
from credo.layers.lora import DEFAULT_TARGETS, LoraWeights, lora_hooks
from credo.tiny_gguf import gguf_for, tiny_gguf, write_gguf

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.usefixtures("isolated_work", "one_thread")  # the GGUFs are cached in this module's own cache

TOLERANCE = {"gemma3": 1e-3, "gemma2": 1e-3, "llama": 2e-5, "qwen2": 2e-5, "qwen3": 2e-5}  # x the largest |logit|
IDS_TEXT = "Hello, wörld!\nAye"  # with the ids below, 24 tokens: past the tiny Gemmas' 16-token sliding window
QUESTION = [{"role": "user", "content": "Who are you?"}]
def llama_cpp_gemma2(seed: int = 0) -> Base:
    """tiny_base's Gemma 2 as every real Gemma 2 is and as llama.cpp's gemma2 assumes: the head tied to the embedding
    (llama.cpp reads no output tensor for it) and queries scaled by 1/sqrt(head_dim) (tiny_base keeps transformers'
    default query_pre_attn_scalar of 256 with a head of 32). The plain one is refused: test_an_untied_gemma2_is_refused."""
    from transformers import Gemma2ForCausalLM

    plain = tiny_base(seed, family="gemma2")
    config = copy.deepcopy(plain.model.config)
    config.tie_word_embeddings, config.query_pre_attn_scalar = True, config.head_dim
    model = Gemma2ForCausalLM(config)
    weights = plain.model.state_dict()
    weights["model.embed_tokens.weight"] = weights.pop("lm_head.weight")  # tiny_base's std-1 embedding as a head saturates the softcap
    model.load_state_dict(weights, strict=False)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.eval()
    return Base(model=model, tokenizer=plain.tokenizer, name=f"tiny-gemma2-tied-{seed}", sha256=weights_sha256(model), spec="")


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family(request, isolated_work):
    """(family, base, llama.cpp on its GGUF with a float32 KV cache and every position's logits)."""
    name = request.param
    base = tiny_base(0, family=name) if name != "gemma2" else llama_cpp_gemma2()
    if name == "gemma2":
        base.gguf = tiny_gguf(base)  # not a spec load_base knows, so gguf_for would not write it
    llm = llama_cpp.Llama(str(gguf_for(base)), n_ctx=256, n_threads=1, logits_all=True, swa_full=True, verbose=False,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    yield name, base, llm
    llm.close()


def ids_of(base: Base) -> list[int]:
    return base.encode(IDS_TEXT, bos=True) + list(range(4, base.model.config.vocab_size, 40))


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@torch.no_grad()
def torch_logits(base: Base, ids: list[int]) -> np.ndarray:
    return base.model(torch.tensor([ids])).logits[0].numpy()


def assert_close(got: np.ndarray, want: np.ndarray, name: str) -> None:
    scale = float(np.abs(want).max())
    assert scale > 0.5, "the comparison would prove nothing on near-zero logits"
    err = float(np.abs(got - want).max())
    assert err <= TOLERANCE[name] * scale, f"{name}: llama.cpp is off by {err:.3g} on logits of scale {scale:.3g}"


def test_tokens_and_logits_match_torch(family):
    name, base, llm = family
    assert llm.tokenize(IDS_TEXT.encode(), add_bos=True, special=False) == base.encode(IDS_TEXT, bos=True)
    assert llm.detokenize(base.encode(IDS_TEXT)).decode() == IDS_TEXT
    ids = ids_of(base)
    assert len(ids) > 16
    assert_close(llama_logits(llm, ids), torch_logits(base, ids), name)


def random_lora(base: Base, targets: tuple[str, ...], seed: int = 1) -> LoraWeights:
    weights = LoraWeights.init(base.model, r=4, targets=targets, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in weights.modules:
        weights.b[m] = 0.5 * torch.randn(weights.b[m].shape, generator=gen)
    return weights


NO_QK = tuple(t for t in DEFAULT_TARGETS if t not in ("q_proj", "k_proj"))


@pytest.mark.parametrize("targets", [DEFAULT_TARGETS, NO_QK], ids=["default-targets", "no-q-k"])
def test_lora_gguf_moves_llama_cpp_as_torch(family, targets, tmp_path):
    name, base, llm = family
    weights = random_lora(base, targets)
    weights.to_gguf(tmp_path / LoraWeights.GGUF_FILE)
    back = LoraWeights.from_gguf(tmp_path / LoraWeights.GGUF_FILE)  # Llama's q/k rows are reordered for llama.cpp, and back
    for m in weights.modules:
        assert torch.equal(back.b[m], weights.b[m]) and torch.equal(back.a[m], weights.a[m])
    ids = ids_of(base)
    bare_llama, bare_torch = llama_logits(llm, ids), torch_logits(base, ids)
    adapter = llama_cpp.llama_adapter_lora_init(llm.model, str(tmp_path / LoraWeights.GGUF_FILE).encode())
    assert adapter, "llama.cpp refused the adapter"
    try:
        llama_cpp.llama_set_adapters_lora(llm.ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter), 1, (ctypes.c_float * 1)(1.0))
        adapted_llama = llama_logits(llm, ids)
    finally:
        llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
        llama_cpp.llama_adapter_lora_free(adapter)
    with lora_hooks(base.model, weights):
        adapted_torch = torch_logits(base, ids)
    assert_close(adapted_llama - bare_llama, adapted_torch - bare_torch, name)


def test_control_gguf_moves_llama_cpp_as_torch(family, tmp_path):
    """llama.cpp's library loads control vectors from memory (its GGUF loader is in the command-line tools), so the
    file is read back as the engine reads a layer's and handed over the same way."""
    name, base, llm = family
    n_layer, n_embd = base.model.config.num_hidden_layers, base.model.config.hidden_size
    gen = torch.Generator().manual_seed(3)
    control = ControlVector({il: torch.randn(n_embd, generator=gen) for il in range(1, n_layer)}, 0.7, model_hint=name)
    control.to_gguf(tmp_path / ControlVector.GGUF_FILE)
    read = ControlVector.from_gguf(tmp_path / ControlVector.GGUF_FILE, strength=0.7)
    flat = np.zeros(n_layer * n_embd, dtype=np.float32)  # llama.cpp's layout: block N's direction at slot N - 1
    for il, v in read.vectors.items():
        flat[(il - 1) * n_embd : il * n_embd] = read.strength * v.numpy()
    ids = ids_of(base)
    bare_llama, bare_torch = llama_logits(llm, ids), torch_logits(base, ids)
    data = (ctypes.c_float * flat.size).from_buffer_copy(flat.tobytes())
    assert llama_cpp.llama_set_adapter_cvec(llm.ctx, data, flat.size, n_embd, min(read.vectors), max(read.vectors)) == 0
    try:
        steered_llama = llama_logits(llm, ids)
    finally:
        llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, -1, -1)
    with steering(base.model, control.vectors, control.strength):
        steered_torch = torch_logits(base, ids)
    assert_close(steered_llama - bare_llama, steered_torch - bare_torch, name)


def answer(engine, key: str, tokens: int = 8) -> str:
    from credo.runtime.torch_engine import GenerationStats
    from credo.server.engines import Sampling

    sampling = Sampling(max_tokens=tokens, temperature=0.0)
    return "".join(engine.stream(key, QUESTION, sampling, GenerationStats(), threading.Event()))


def made_layer(base: Base, manifesto, kind: str, seed: int = 4):
    """A distill layer around a random LoRA (no q/k, to keep it small) or a steer layer around random control vectors,
    in a prompt layer's info: compiling either on these tiny bases barely moves a greedy answer, and takes seconds."""
    import dataclasses

    from credo.layers import compile_layer
    from credo.layers.kinds.distill import DistillLayer
    from credo.layers.kinds.steer import SteerLayer

    shell = compile_layer(manifesto, base, "prompt", name=kind)
    if kind == "distill":
        info = dataclasses.replace(shell.info, kind=kind, params={})
        weights = random_lora(base, NO_QK, seed)
        DistillLayer.describe(weights, info)
        return DistillLayer(info, shell.manifesto, weights)
    gen = torch.Generator().manual_seed(seed)
    n_layer, n_embd = base.model.config.num_hidden_layers, base.model.config.hidden_size
    control = ControlVector({il: 4.0 * torch.randn(n_embd, generator=gen) for il in range(1, n_layer)}, 1.0)
    params = {"layers": sorted(control.vectors), "strength": control.strength}
    return SteerLayer(dataclasses.replace(shell.info, kind=kind, params=params), shell.manifesto, control)


@pytest.mark.parametrize("kind", ["distill", "steer"])
def test_the_llama_cpp_engine_serves_a_layer(family, kind, pirate, tmp_path):
    """A layer saved (lora.gguf or control.gguf beside its own files), loaded and served by both engines gives the same
    greedy answer, and not the bare base's."""
    from credo.layers import load_layer, save_layer
    from credo.server.engines import make_engine

    name, base, _ = family
    folder = save_layer(made_layer(base, pirate, kind), tmp_path / kind)
    assert (folder / (LoraWeights.GGUF_FILE if kind == "distill" else ControlVector.GGUF_FILE)).is_file()
    layer = load_layer(folder, base)
    served = {}
    for engine_name in ("llamacpp", "torch"):
        engine = make_engine(engine_name, base, n_ctx=512, threads=1)
        engine.add("x", layer, folder)
        served[engine_name] = (answer(engine, "x"), answer(engine, ""))
        del engine
    assert served["llamacpp"] == served["torch"]
    assert served["llamacpp"][0] != served["llamacpp"][1], f"the {kind} layer does not change the answer on {name}"


def test_an_untied_gemma2_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(BaseModelError, match="llama.cpp's gemma2 takes its output head from token_embd") as err:
        write_gguf(tiny_base(0, family="gemma2"), tmp_path / "g.gguf")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_the_tiny_gguf_is_cached_by_weights_and_config():
    first = tiny_gguf(tiny_base(0, family="qwen3"))
    stamp = first.stat().st_mtime_ns
    assert tiny_gguf(tiny_base(0, family="qwen3")) == first and first.stat().st_mtime_ns == stamp  # not written again
    assert tiny_gguf(tiny_base(1, family="qwen3")) != first  # other weights
    assert tiny_gguf(tiny_base(0, family="gemma3")) != tiny_gguf(tiny_base(0, family="gemma3", sliding_window=8))  # same weights, other config
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind
