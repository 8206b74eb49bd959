"""The llama.cpp engine: fast CPU serving of many identities over one loaded GGUF base.

A layer maps onto what llama.cpp offers, whatever its kind: its context text (prompt and cache kinds) becomes a
prefilled sequence state taken once when the identity is added and restored per request; the LoRA weights it carries
become a LoRA adapter (the GGUF file `LoraWeights.to_gguf` wrote into its folder) and its `ControlVector` a control
vector, both loaded once and switched per request on the same context. The engine asks the layer what it carries and
parses no payload file itself. The base is never reloaded, and the KV memory is only reused across requests of the same
identity, so nothing bleeds over.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credo.errors import CredoError, LayerError
from credo.layers.layer import Layer as BaseLayer
from credo.server.engines import register
from credo.server.engines.base import Messages, PromptTooLong, RawText, Sampling
from credo.tiny_gguf import gguf_for

if TYPE_CHECKING:
    from credo.base import Base
    from credo.layers.control import ControlVector
    from credo.layers.layer import Layer
    from credo.layers.lora import LoraWeights
    from credo.runtime.torch_engine import GenerationStats


@dataclass
class _Identity:
    """What one identity needs at request time; everything here is computed once, when it is added."""

    context_ids: list[int]
    state: Any = None  # ctypes byte array: the sequence state after prefilling `context_ids`
    lora: Any = None  # llama_adapter_lora_p
    lora_scale: float = 1.0
    control: Any = None  # (ctypes float array, length, n_embd, il_start, il_end)


@register
class LlamaCppEngine:
    """Serves through llama-cpp-python on one context; the server's single worker thread is its only caller."""

    name = "llamacpp"
    order = 10  # auto: first choice on a CPU, where llama.cpp's kernels are fastest

    @classmethod
    def suits(cls, base: Base) -> bool:
        import torch

        return base.gguf is not None and not torch.cuda.is_available()

    @classmethod
    def create(cls, base: Base, n_ctx: int = 4096, threads: int | None = None) -> LlamaCppEngine:
        return cls(base, n_ctx=n_ctx, threads=threads)
    shares_torch_base = False

    def __init__(self, base: Base, n_ctx: int = 4096, threads: int | None = None, n_batch: int = 512):
        gguf = gguf_for(base)  # a tiny random base gets one written (and cached) from its weights
        if gguf is None:
            raise CredoError(f"base {base.name} has no GGUF file, so llama.cpp cannot serve it; use --engine torch")
        import llama_cpp
        from llama_cpp import Llama

        self.lib = llama_cpp
        self.base = base
        # swa_full keeps every position of the sliding-window layers, so a prefix of the KV memory can be kept and reused.
        self.llm = Llama(
            str(gguf), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads or os.cpu_count(), swa_full=True, verbose=False
        )
        self.n_ctx = n_ctx
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_embd = self.llm.n_embd()
        self.n_layer = llama_cpp.llama_model_n_layer(self.llm.model)
        self.identities: dict[str, _Identity] = {}
        self._owner: str | None = None  # identity whose run produced what the KV memory now holds
        self._active: tuple[Any, Any] = (None, None)  # (lora, control) currently set on the context
        self.add("", None)

    # --- identities ---------------------------------------------------------------------------------------------
    def add(self, key: str, layer: Layer | None, folder: Path | None = None) -> None:
        """Prepare an identity: load its adapter and control vector, prefill its context once and keep the state."""
        ident = _Identity(context_ids=self.tokenize(layer.context(self.base) if layer else "", bos=True))
        if layer is not None:
            self._map_weights(ident, layer, folder)
        old = self.identities.get(key)
        if self._owner == key:
            self._owner = None
        self._snapshot(ident)
        self.identities[key] = ident
        if old is not None:
            self._free(old)

    def remove(self, key: str) -> None:
        ident = self.identities.pop(key, None)
        if self._owner == key:
            self._owner = None
        if ident is not None:
            self._free(ident)

    def has(self, key: str) -> bool:
        return key in self.identities

    def _map_weights(self, ident: _Identity, layer: Layer, folder: Path | None) -> None:
        from credo.layers.control import ControlVector
        from credo.layers.lora import LoraWeights

        loras, controls, unservable = carried(layer)
        if unservable:
            raise LayerError(
                f"layer {layer.name} ({layer.kind}) changes the forward pass in a way llama.cpp cannot load "
                f"({', '.join(unservable)}); serve it with --engine torch"
            )
        if loras:
            if folder is None or not (any(w.arch for w in loras) or layer.info.params.get("gguf_arch")):  # to_gguf needs an arch
                raise LayerError(
                    f"layer {layer.name} ({layer.kind}) has a LoRA adapter but no llama.cpp form of it (its base has no "
                    "llama.cpp architecture name, or no layer folder was given); serve it with --engine torch"
                )
            path = folder / LoraWeights.GGUF_FILE  # written by LoraWeights.to_gguf; a stack writes its merged adapter there
            ptr = self.lib.llama_adapter_lora_init(self.llm.model, str(path).encode())
            if not ptr:
                raise LayerError(f"llama.cpp cannot load the LoRA adapter {path}")
            ident.lora, ident.lora_scale = ptr, float(layer.info.params.get("lora_scale", 1.0))
        if controls:
            ident.control = self._control_array(controls[0] if len(controls) == 1 else ControlVector.combined(controls), layer.name)

    def _control_array(self, control: ControlVector, name: str) -> tuple[Any, int, int, int, int]:
        """llama.cpp wants the scaled directions flat, one n_embd slot per decoder layer N (1-based)."""
        import numpy as np

        flat = np.zeros(self.n_embd * self.n_layer, dtype=np.float32)
        for il, v in control.vectors.items():
            vec = v.detach().float().numpy().reshape(-1)
            if vec.size != self.n_embd or not 1 <= il <= self.n_layer:
                raise LayerError(f"the control vector of {name} steers layer {il} with {vec.size} floats; "
                                 f"this base has layers 1..{self.n_layer} of {self.n_embd}")
            flat[(il - 1) * self.n_embd : il * self.n_embd] = vec * control.strength
        if not control.vectors:
            raise LayerError(f"the control vector of {name} steers no layer")
        data = (ctypes.c_float * flat.size).from_buffer_copy(flat.tobytes())
        return (data, flat.size, self.n_embd, min(control.vectors), max(control.vectors))

    def _free(self, ident: _Identity) -> None:
        if ident.lora is not None:
            if self._active[0] is ident.lora:
                self._set_adapters(None, self._active[1])
            self.lib.llama_adapter_lora_free(ident.lora)
            ident.lora = None

    # --- context state ------------------------------------------------------------------------------------------
    def _set_adapters(self, lora: Any, control: Any) -> None:
        """Switch the context's LoRA and control vector to this identity's (a no-op when they are already set)."""
        lib, ctx = self.lib, self.llm.ctx
        if lora is not self._active[0]:
            if lora is None:
                lib.llama_set_adapters_lora(ctx, None, 0, None)
            else:
                arr = (lib.llama_adapter_lora_p_ctypes * 1)(lora)
                lib.llama_set_adapters_lora(ctx, arr, 1, (ctypes.c_float * 1)(self._scale_of(lora)))
        if control is not self._active[1]:
            if control is None:
                lib.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, -1, -1)
            else:
                data, n, n_embd, start, end = control
                if lib.llama_set_adapter_cvec(ctx, data, n, n_embd, start, end) != 0:
                    raise LayerError("llama.cpp refused the control vector")
        self._active = (lora, control)

    def _scale_of(self, lora: Any) -> float:
        return next((i.lora_scale for i in self.identities.values() if i.lora is lora), 1.0)

    def _clear_memory(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.llm.ctx), False)  # metadata only: no need to zero the buffers
        self.llm.n_tokens = 0

    def _snapshot(self, ident: _Identity) -> None:
        lib, ctx = self.lib, self.llm.ctx
        self._set_adapters(ident.lora, ident.control)
        self._clear_memory()
        self._owner = None
        self.llm.eval(ident.context_ids)
        size = lib.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        if lib.llama_state_seq_get_data(ctx, buf, size, 0) == 0:
            raise LayerError("llama.cpp could not save the identity's state")
        ident.state = buf

    def _restore(self, key: str, ident: _Identity) -> None:
        self._clear_memory()
        if self.lib.llama_state_seq_set_data(self.llm.ctx, ident.state, len(ident.state), 0) == 0:
            raise LayerError(f"llama.cpp could not restore the state of identity {key or 'base'}")
        n = len(ident.context_ids)
        self.llm.input_ids[:n] = ident.context_ids
        self.llm.n_tokens = n
        self.llm._requires_eval = True  # the logits are not restored: generate() must decode before sampling
        self._owner = key

    def _enter(self, key: str, ident: _Identity) -> None:
        """Make the context hold this identity: adapters set, and its context in the KV memory (reused or restored)."""
        self._set_adapters(ident.lora, ident.control)
        n = len(ident.context_ids)
        if self._owner == key and self.llm.n_tokens >= n and list(self.llm.input_ids[:n]) == ident.context_ids:
            return
        self._restore(key, ident)

    # --- generation ---------------------------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False) if text or bos else []

    def conversation_ids(self, prompt: RawText | Messages) -> list[int]:
        text = str(prompt) if isinstance(prompt, RawText) else self.base.format_chat(list(prompt))
        return self.tokenize(text)

    def stream(
        self, key: str, prompt: RawText | Messages, sampling: Sampling, stats: GenerationStats, cancel: threading.Event
    ) -> Iterator[str]:
        """Yield the answer as text pieces; stops at an end-of-generation token or `max_tokens` (stop strings are the caller's)."""
        start = time.perf_counter()
        ident = self.identities[key]
        tokens = ident.context_ids + self.conversation_ids(prompt)
        if len(tokens) + sampling.max_tokens > self.n_ctx:
            raise PromptTooLong(
                f"prompt is {len(tokens)} tokens; with max_tokens {sampling.max_tokens} it exceeds the context of {self.n_ctx}"
            )
        self._enter(key, ident)
        self.llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(31))
        stats.context_tokens, stats.prompt_tokens = len(ident.context_ids), len(tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        gen = self.llm.generate(
            tokens, temp=sampling.temperature, top_p=sampling.top_p, top_k=0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0
        )
        stats.finish_reason = "length"
        try:
            for _ in range(sampling.max_tokens):
                token = next(gen)
                if stats.completion_tokens == 0:
                    stats.ttft_seconds = time.perf_counter() - start
                if self.lib.llama_vocab_is_eog(self.vocab, token):
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                piece = decoder.decode(self.llm.detokenize([token]))
                if piece:
                    yield piece
                if cancel.is_set():
                    return
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
        finally:
            gen.close()
            stats.total_seconds = time.perf_counter() - start


def carried(layer: Layer) -> tuple[list[LoraWeights], list[ControlVector], list[str]]:
    """The LoRA weights and control vectors a layer adds to the forward pass (a stack: those of all its parts), and the
    kinds of any part whose change is neither, which llama.cpp cannot load."""
    from credo.layers.control import ControlVector
    from credo.layers.lora import LoraWeights

    payloads = layer.payloads()
    loras = [p for p in payloads if isinstance(p, LoraWeights)]
    controls = [p for p in payloads if isinstance(p, ControlVector)]
    unservable = [p.kind for p in layer.parts() if type(p).applied is not BaseLayer.applied and not p.payloads()]
    return loras, controls, unservable
