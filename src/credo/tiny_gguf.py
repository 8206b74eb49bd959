"""A tiny base as a GGUF file llama.cpp loads, so the llama.cpp path (the base, `lora.gguf`, `control.gguf`, the serving
engine) is tested on every tiny family without a download.

The file is written with the `gguf` package from the transformers model in memory: float32 tensors under the names of
gguf's own HF -> GGUF map, and the metadata llama.cpp's loader reads for the architecture. Where llama.cpp computes
something differently from transformers, the weights are rewritten so the two compute the same function (facts from
llama.cpp's src/models/*.cpp and llama-model.cpp; gguf-py's constants.py and tensor_mapping.py):

- Gemma's RMSNorm multiplies by (1 + w) in transformers and by w in llama.cpp: every norm weight gets +1.
- llama.cpp scales Gemma's queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) at 27B, told by the layer count), whatever
  `query_pre_attn_scalar` says (real Gemmas agree with it; the tiny ones do not): Gemma 3 gets the ratio folded into its
  query norm, which a LoRA on q_proj passes through too. Gemma 2 has no query norm, and folding it into the q_proj
  weights would leave such a LoRA unscaled, so a Gemma 2 whose scale differs is refused.
- llama.cpp ropes Llama's adjacent pairs where transformers rotates halves: q and k rows are permuted per head.
- llama.cpp's Gemma 2 has no output tensor (its head is token_embd): an untied Gemma 2 cannot be written.
- which layers slide is a period in llama.cpp (layer i slides iff i % p < p - 1): the layer types must follow one.

The tokenizer is the tiny bases' byte-level BPE, written as llama.cpp's "gpt2" model with the same ids. The gguf writer
refuses an empty array and llama.cpp requires the merges key, so a tokenizer with no merges gets one that can never
fire (two special tokens' texts, which byte-level text never forms).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from credo.base import Base, cache_dir
from credo.errors import BaseModelError
from credo.families import Family, adjacent_pairs, family_of
from credo.fsutil import gguf_written_atomically

if TYPE_CHECKING:
    from gguf import GGUFWriter
    from transformers import PretrainedConfig

FORMAT = "credo-tiny-gguf-1"  # part of the cache key: change it when the written file changes, so cached files are rewritten
TINY_SPEC = re.compile(r"^tiny(-[a-z0-9]+)?:\d+$")  # what load_base reads as a tiny random base


WRITABLE = ("gemma3", "gemma2", "llama", "qwen2", "qwen3")  # the families this writer lays out (and tests)


def writable_family(base: Base) -> Family:
    model_type = getattr(base.model.config, "model_type", "")
    family = family_of(model_type)
    if family is None or family.name not in WRITABLE:
        raise BaseModelError(f"cannot write {base.name} as a GGUF: its model type {model_type!r} is not one of {', '.join(WRITABLE)}")
    return family


def is_tiny(base: Base) -> bool:
    return bool(TINY_SPEC.match(base.spec))


def gguf_for(base: Base) -> Path | None:
    """The GGUF llama.cpp serves this base from: its own, or for a tiny random base the one written here (cached)."""
    if base.gguf is not None:
        return base.gguf
    return tiny_gguf(base) if is_tiny(base) else None


def cache_key(base: Base) -> str:
    """The weights' sha256 with the config and this writer's format: two tiny bases with the same weights but another
    sliding window (tiny_base's argument) are different files."""
    config = json.dumps(base.model.config.to_diff_dict(), sort_keys=True, default=str)
    return hashlib.sha256(f"{FORMAT}|{base.sha256}|{config}".encode()).hexdigest()


def tiny_gguf(base: Base) -> Path:
    """The base's GGUF under the cache, written once (atomically) and reused while weights and config are the same."""
    path = cache_dir() / "tiny-gguf" / f"{base.name}-{cache_key(base)[:16]}.gguf"
    if not path.is_file():
        write_gguf(base, path)
    return path


def write_gguf(base: Base, path: Path) -> Path:
    """Write the base as a float32 GGUF at `path`; a reader sees no file or the whole one. Raises BaseModelError, leaving
    nothing on disk, for what llama.cpp cannot compute the same way."""
    import gguf

    family = writable_family(base)
    config = base.model.config
    tensors = _tensors(base, family)
    vocab = _vocab(base)
    with gguf_written_atomically(Path(path), family.gguf_arch) as writer:
        writer.add_name(base.name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        _add_hparams(writer, config, family)
        _add_tokenizer(writer, vocab, base)
        for name, data in tensors.items():
            writer.add_tensor(name, data)
    return Path(path)


# --- hyper-parameters ---------------------------------------------------------------------------------------------
def _rope_theta(config: PretrainedConfig, layer_type: str = "full_attention") -> float:
    """transformers 5 keeps RoPE in `rope_parameters`, per layer type where sliding and full layers differ (Gemma 3)."""
    params = getattr(config, "rope_parameters", None) or {}
    params = params.get(layer_type, params)
    if params.get("rope_type", "default") != "default":
        raise BaseModelError(f"cannot write a GGUF for RoPE scaling {params.get('rope_type')!r}: only plain RoPE is supported here")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _head_dim(config: PretrainedConfig) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _swa_period(layer_types: list[str]) -> int:
    """llama.cpp's sliding-window period p (layer i slides iff i % p < p - 1; 0: every layer slides) for these types."""
    sliding = [t == "sliding_attention" for t in layer_types]
    if all(sliding):
        return 0
    for p in range(1, len(sliding) + 1):
        if all(s == (i % p < p - 1) for i, s in enumerate(sliding)):
            return p
    raise BaseModelError(f"cannot write a GGUF: llama.cpp slides layers by a period, and these layer types follow none: {layer_types}")


def _llama_cpp_query_scale(config: PretrainedConfig, family: Family) -> float:
    """The query scale llama.cpp's Gemma graphs use (load_arch_hparams: by head size, or hidden/heads at 27B)."""
    if config.num_hidden_layers == family.size_27b_layers:
        return 1.0 / math.sqrt(config.hidden_size // config.num_attention_heads)
    return 1.0 / math.sqrt(_head_dim(config))


def _query_fold(config: PretrainedConfig, family: Family) -> float:
    """What the queries must be multiplied by so llama.cpp's scale gives transformers' `query_pre_attn_scalar**-0.5`."""
    if not family.gemma:
        return 1.0
    return float(config.query_pre_attn_scalar) ** -0.5 / _llama_cpp_query_scale(config, family)


def _add_hparams(writer: GGUFWriter, config: PretrainedConfig, family: Family) -> None:
    head_dim = _head_dim(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_vocab_size(config.vocab_size)
    if getattr(config, "use_sliding_window", False):
        raise BaseModelError(f"cannot write a GGUF for a sliding-window {family.gguf_arch}: llama.cpp's {family.gguf_arch} has none")
    if family.gemma:
        layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)
        period = _swa_period(layer_types)
        if period != 1:  # 1: no layer slides (Gemma 3 is told by leaving the window out)
            writer.add_sliding_window(config.sliding_window)
        writer.add_sliding_window_pattern(period)
        writer.add_rope_freq_base_swa(_rope_theta(config, "sliding_attention"))
        if getattr(config, "attn_logit_softcapping", None):
            writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        if getattr(config, "final_logit_softcapping", None):
            writer.add_final_logit_softcapping(config.final_logit_softcapping)
    activation = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    if activation != ("gelu_pytorch_tanh" if family.gemma else "silu"):
        raise BaseModelError(f"cannot write a GGUF: llama.cpp's {family.gguf_arch} MLP is not {activation!r}")


# --- tensors ------------------------------------------------------------------------------------------------------
def _tensors(base: Base, family: Family) -> dict[str, np.ndarray]:
    import gguf

    model, config = base.model, base.model.config
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == family.gguf_arch)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    tied = head is embed or head.data_ptr() == embed.data_ptr()
    if family.head_is_embedding and not tied:
        raise BaseModelError(f"cannot write {base.name} as a GGUF: llama.cpp's {family.gguf_arch} takes its output head from "
                             "token_embd, and this model's head is untied")
    if tied:
        state.pop("lm_head.weight", None)
    fold = _query_fold(config, family)
    if not math.isclose(fold, 1.0, rel_tol=1e-6) and not family.scale_in_q_norm:
        raise BaseModelError(f"cannot write {base.name} as a GGUF: llama.cpp's {family.gguf_arch} scales queries by "
                             f"{_llama_cpp_query_scale(config, family):.6g}, this model by query_pre_attn_scalar**-0.5 = "
                             f"{float(config.query_pre_attn_scalar) ** -0.5:.6g}, and it has no query norm to fold the ratio into")
    out = {}
    for key, t in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise BaseModelError(f"cannot write {base.name} as a GGUF: no {family.gguf_arch} tensor for {key}")
        if family.gemma and key.endswith("norm.weight"):
            t = t + 1.0
        if key.endswith("self_attn.q_norm.weight"):
            t = t * fold
        if family.rope_adjacent_pairs and key.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            t = adjacent_pairs(t, t.shape[0] // config.num_attention_heads)
        elif family.rope_adjacent_pairs and key.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            t = adjacent_pairs(t, t.shape[0] // config.num_key_value_heads)
        out[name] = t.contiguous().numpy()
    return out


# --- tokenizer ----------------------------------------------------------------------------------------------------
@dataclass
class _Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]


def _vocab(base: Base) -> _Vocab:
    """The tokenizer as llama.cpp's "gpt2" (byte-level BPE) vocabulary: the same ids, specials as control tokens."""
    import gguf

    tok = base.tokenizer
    try:
        spec = json.loads(tok.backend_tokenizer.to_str())
    except AttributeError:
        raise BaseModelError(f"cannot write {base.name} as a GGUF: only a fast (tokenizers) tokenizer can be written") from None
    pre = spec.get("pre_tokenizer") or {}
    if spec["model"].get("type") != "BPE" or pre.get("type") != "ByteLevel":
        raise BaseModelError(f"cannot write {base.name} as a GGUF: its tokenizer is not a byte-level BPE (llama.cpp's gpt2)")
    by_id = {i: t for t, i in tok.get_vocab().items()}
    n = base.model.config.vocab_size
    if sorted(by_id) != list(range(n)):
        raise BaseModelError(f"cannot write {base.name} as a GGUF: its tokenizer's ids are not 0..{n - 1}")
    special = set(tok.all_special_ids)
    tokens = [by_id[i] for i in range(n)]
    types = [int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL) for i in range(n)]
    if spec["model"].get("merges") or len(special) < 2:  # real merges need llama.cpp's name for the pre-tokenizer's split
        raise BaseModelError(f"cannot write {base.name} as a GGUF: only a byte-level tokenizer with no merges and two special tokens is written")
    a, b = sorted(special)[:2]
    return _Vocab(tokens, types, [f"{by_id[a]} {by_id[b]}"])  # never fires: byte-level text never forms a special token's text


def _add_tokenizer(writer: GGUFWriter, vocab: _Vocab, base: Base) -> None:
    tok = base.tokenizer
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")  # with no merge that fires, how text is split before BPE does not matter
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    for token_id, add in ((tok.bos_token_id, writer.add_bos_token_id), (tok.eos_token_id, writer.add_eos_token_id),
                          (tok.unk_token_id, writer.add_unk_token_id), (tok.pad_token_id, writer.add_pad_token_id)):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(tok.bos_token_id is not None)  # credo starts every sequence with BOS (Base.bos_ids)
    writer.add_add_eos_token(False)
