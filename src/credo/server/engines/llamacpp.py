"""The llama.cpp engine: fast CPU serving of many identities over one loaded GGUF base.

A layer folder maps onto what llama.cpp offers, whatever its kind: its context text (prompt and cache kinds) becomes a
prefilled sequence state taken once when the identity is added and restored per request; `lora.gguf` becomes a LoRA
adapter and `control.gguf` a control vector, both loaded once and switched per request on the same context. The base
is never reloaded, and the KV memory is only reused across requests of the same identity, so nothing bleeds over.
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

from credo.errors import LayerError

if TYPE_CHECKING:
    from credo.base import Base
    from credo.runtime.torch_engine import GenerationStats
    from credo.layers.layer import Layer
    from credo.server.engines import Messages, RawText, Sampling

LORA_FILE = "lora.gguf"
CONTROL_FILE = "control.gguf"


@dataclass
class _Identity:
    """What one identity needs at request time; everything here is computed once, when it is added."""

    context_ids: list[int]
    state: Any = None  # ctypes byte array: the sequence state after prefilling `context_ids`
    lora: Any = None  # llama_adapter_lora_p
    lora_scale: float = 1.0
    control: Any = None  # (ctypes float array, length, n_embd, il_start, il_end)


class LlamaCppEngine:
    """Serves through llama-cpp-python on one context; the server's single worker thread is its only caller."""

    name = "llamacpp"
    shares_torch_base = False

    def __init__(self, base: Base, n_ctx: int = 4096, threads: int | None = None, n_batch: int = 512):
        import llama_cpp
        from llama_cpp import Llama

        self.lib = llama_cpp
        self.base = base
        # swa_full keeps every position of the sliding-window layers, so a prefix of the KV memory can be kept and reused.
        self.llm = Llama(
            str(base.gguf), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads or os.cpu_count(), swa_full=True, verbose=False
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
        from credo.layers.layer import Layer as BaseLayer

        lora = folder / LORA_FILE if folder else None
        control = folder / CONTROL_FILE if folder else None
        has_lora, has_control = bool(lora and lora.is_file()), bool(control and control.is_file())
        if type(layer).applied is not BaseLayer.applied and not (has_lora or has_control):
            raise LayerError(
                f"layer {layer.name} ({layer.kind}) changes the forward pass but has no {LORA_FILE} or {CONTROL_FILE}, "
                "so llama.cpp cannot serve it; serve it with --engine torch"
            )
        if has_lora:
            ptr = self.lib.llama_adapter_lora_init(self.llm.model, str(lora).encode())
            if not ptr:
                raise LayerError(f"llama.cpp cannot load the LoRA adapter {lora}")
            ident.lora, ident.lora_scale = ptr, float(layer.info.params.get("lora_scale", 1.0))
        if has_control:
            ident.control = self._read_control(control, float(layer.info.params.get("strength", 1.0)))

    def _read_control(self, path: Path, strength: float) -> tuple[Any, int, int, int, int]:
        """A control-vector GGUF holds one `direction.N` tensor per decoder layer N (1-based); llama.cpp wants them flat."""
        import numpy as np
        from gguf import GGUFReader

        try:
            reader = GGUFReader(str(path))
        except Exception as e:  # gguf raises ValueError, struct.error and more on a bad file
            raise LayerError(f"cannot read control vector {path}: {e}") from None
        flat = np.zeros(self.n_embd * self.n_layer, dtype=np.float32)
        layers = []
        for t in reader.tensors:
            if not t.name.startswith("direction."):
                continue
            il = int(t.name.split(".", 1)[1])
            vec = np.asarray(t.data, dtype=np.float32).reshape(-1)
            if vec.size != self.n_embd or not 1 <= il <= self.n_layer:
                raise LayerError(f"control vector {path}: {t.name} does not fit a base of {self.n_layer} layers x {self.n_embd}")
            flat[(il - 1) * self.n_embd : il * self.n_embd] = vec * strength
            layers.append(il)
        if not layers:
            raise LayerError(f"control vector {path} has no direction.N tensors")
        data = (ctypes.c_float * flat.size).from_buffer_copy(flat.tobytes())
        return (data, flat.size, self.n_embd, min(layers), max(layers))

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
        from credo.server.engines import RawText

        text = str(prompt) if isinstance(prompt, RawText) else self.base.format_chat(list(prompt))
        return self.tokenize(text)

    def stream(
        self, key: str, prompt: RawText | Messages, sampling: Sampling, stats: GenerationStats, cancel: threading.Event
    ) -> Iterator[str]:
        """Yield the answer as text pieces; stops at an end-of-generation token or `max_tokens` (stop strings are the caller's)."""
        from credo.server.engines import PromptTooLong

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
