"""The bare base's input second moments at each patched module over generic text: the keep term of every hyper solve.

MEMIT keeps an edit from moving a model where the edit has nothing to say by adding C, the covariance of the module's
inputs on generic text, to the normal equations (its configs use 100k Wikipedia samples). credo ships no corpus and
downloads nothing, so the generic text is the base's own: continuations it samples from short openings of many kinds
(seeded: a base always gets the same ones), plus the bundled neutral prose: the prose alone held the patch still on
too little text. The moments depend only on the base, so they are computed once, kept on disk per base
(`~/.cache/credo/hyper/`), and a compile reads them in milliseconds. The file is a cache:
a corrupt one is recomputed, never trusted.

Writing the text is most of a first compile (the 262k-wide head runs 96 times over 192 rows). For the embedded base the
text ships with credo (`credo/assets/keep-*.safetensors`, 80 kB of token ids, written by `python -m
credo.hyper.keep_stats` in float32), so its first compile only takes the moments, and every machine fits the same text
whatever precision it samples in; any other base writes its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from credo.base import cache_dir
from credo.fsutil import save_tensors_atomic
from credo.hyper.batch import chunk_width, make_batch, run_body
from credo.hyper.texts import NEUTRAL_PROSE
from credo.runtime.precision import compute

if TYPE_CHECKING:
    from credo.base import Base

# Openings in many registers; the base writes on from each (SAMPLES times, 96 tokens), so the moments see the kinds of
# text a capability check reads (encyclopedia, fiction, news, instructions, dialogue) in the base's own words.
OPENINGS = [
    "The history of the city begins", "In mathematics, a group is", "Once upon a time, in a small village,",
    "The weather forecast for the weekend", "To install the package, first", "Chapter One\n\nThe house stood",
    "The committee announced on Monday that", "Dear Sarah,\n\nThank you for your letter", "The human heart has four",
    "Ingredients:\n- 2 cups of flour", "The match ended in a draw after", "Abstract. We study the problem of",
    "The river rises in the mountains and", "\"Where have you been?\" she asked.", "The company reported quarterly",
    "Photosynthesis takes place in the", "The old man looked at the sea and", "Article 1. Every citizen has the right",
    "The museum's collection includes", "In the year 1848, revolutions", "The best way to learn a language is",
    "Volcanoes form where the Earth's crust", "The population of the country is", "Review: the new phone is",
]
SAMPLES = 8  # per opening (20k tokens in all); fewer drift more on neutral text, 16 gains nothing over 8
SAMPLE_TOKENS = 96
TOP_K = 40


ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _recipe() -> str:
    return hashlib.sha256(json.dumps([OPENINGS, SAMPLES, SAMPLE_TOKENS, TOP_K]).encode()).hexdigest()[:8]


def _path(base: Base) -> Path:
    """Per base, and per recipe: a change to the openings, the sample count or length, or the prose is a new file (and
    one whose text shipped is apart from one that wrote its own)."""
    recipe = hashlib.sha256(json.dumps([_recipe(), NEUTRAL_PROSE, _shipped_path(base).is_file()]).encode()).hexdigest()[:8]
    return cache_dir() / "hyper" / f"keep-{base.sha256[:16]}-{recipe}.safetensors"


def _shipped_path(base: Base) -> Path:
    return ASSETS / f"keep-{base.sha256[:16]}-{_recipe()}.safetensors"


def _shipped(base: Base) -> list[list[int]] | None:
    """The base's samples as shipped with credo (None when this base has none)."""
    path = _shipped_path(base)
    if not path.is_file():
        return None
    t = load_file(str(path))
    flat, lengths = t["ids"].tolist(), t["lengths"].tolist()
    bounds = [0] + torch.tensor(lengths).cumsum(0).tolist()
    return [flat[a:b] for a, b in zip(bounds, bounds[1:])]


def keep_moments(base: Base, modules: dict[str, torch.nn.Linear]) -> dict[str, torch.Tensor]:
    """Per module name: E[x xᵀ] (in, in) of its inputs over the generic text, float32, read from the cache if there.

    The text is sampled and the moments taken in the chosen precision (`credo.runtime.precision`); the two precisions
    give different text and moments, so each keeps its own under its name."""
    path = _path(base)
    known = _read(path)
    with compute(base) as precision:
        text = f"{precision.name}/corpus"
        if f"{text}/ids" not in known:  # moments are kept only beside the text they were taken over
            known = {k: v for k, v in known.items() if not k.startswith(f"{precision.name}/")}
        keys = {name: f"{precision.name}/{name}" for name in modules}
        missing = {name: mod for name, mod in modules.items() if keys[name] not in known}
        if missing:
            if f"{text}/ids" not in known:
                known[f"{text}/ids"], known[f"{text}/lengths"] = _corpus(base, precision.dtype)
            moments = _moments(base, missing, known[f"{text}/ids"], known[f"{text}/lengths"].tolist())
            known.update({keys[name]: m for name, m in moments.items()})
            save_tensors_atomic(path, known)
    return {name: known[keys[name]] for name in modules}


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError):
        return {}


@torch.inference_mode()
def _corpus(base: Base, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The generic text as right-padded ids (rows, T) and lengths: the prose, then the base's samples (seeded)."""
    rows = [base.encode(t, bos=True) for t in NEUTRAL_PROSE]
    rows += _shipped(base) or _samples(base, dtype)
    b = make_batch(rows, [0] * len(rows), base.tokenizer.pad_token_id or 0)
    return b.ids, torch.tensor(b.lengths)


def _samples(base: Base, dtype: torch.dtype) -> list[list[int]]:
    """The base's own continuations of the openings, seeded: a base always writes the same ones on one machine."""
    starts = [base.encode(o, bos=True) for o in OPENINGS for _ in range(SAMPLES)]
    return _sample(base, starts, SAMPLE_TOKENS, TOP_K, torch.Generator(device=base.device).manual_seed(0), dtype)


def _sample(base: Base, starts: list[list[int]], tokens: int, top_k: int, gen: torch.Generator, dtype: torch.dtype) -> list[list[int]]:
    """Top-k sampled continuations of `starts`, one left-padded batch, each cut at its first stop token.

    Its own loop, not `generate`: the output head runs in the chosen precision (`Base.rough_logits`, a kept copy under
    bf16) and only its top k are softmaxed in float32: about 5x faster than `generate` here."""
    from tqdm import tqdm
    from transformers import DynamicCache

    pad, width, n = base.tokenizer.pad_token_id or 0, max(len(s) for s in starts), len(starts)
    device = base.device
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in starts], device=device)
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(s) for s in starts])[:, None]).long().to(device)
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    cache = DynamicCache(config=base.model.config)
    cap = getattr(base.model.config, "final_logit_softcapping", None)
    out: list[torch.Tensor] = []
    for _ in tqdm(range(tokens), desc="hyper: the base writes its keep text (once per base)", leave=False):
        hidden = base.forward(ids, cache, body_only=True, attention_mask=mask, position_ids=pos).last_hidden_state
        rough = base.rough_logits(hidden[:, -1], dtype)
        top, cand = rough.topk(top_k, -1)
        top = top.float()
        if cap:
            top = torch.tanh(top / cap) * cap
        token = cand.gather(1, torch.multinomial(torch.softmax(top, -1), 1, generator=gen))
        out.append(token[:, 0])
        ids, pos = token, pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], 1)
    stops = base.stop_ids
    rows = []
    for s, row in zip(starts, torch.stack(out, 1).tolist()):
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        rows.append(s + row[:cut])
    return rows


def _moments(base: Base, modules: dict[str, torch.nn.Linear], ids: torch.Tensor, lengths: list[int], chunk: int = 16) -> dict[str, torch.Tensor]:
    """Σ x xᵀ / n over every token after the BOS, each module's inputs taken as the bare base runs over the corpus."""
    cols = torch.arange(ids.shape[1])[None, :]
    fit = (cols >= len(base.bos_ids)) & (cols < torch.tensor(lengths)[:, None])  # every real token after the BOS
    masks = [fit[lo : lo + chunk, : chunk_width(lengths, lo, chunk)] for lo in range(0, len(lengths), chunk)]
    sums = {name: torch.zeros(mod.in_features, mod.in_features, device=mod.weight.device) for name, mod in modules.items()}
    seen = dict.fromkeys(modules, 0)
    count = int(fit.sum())

    def add(name: str, x: torch.Tensor) -> None:
        rows = x.detach()[masks[seen[name]].to(x.device)].float()
        seen[name] += 1
        with torch.autocast(x.device.type, enabled=False):  # the pass may run in a reduced precision; the sums never do
            sums[name].addmm_(rows.T, rows)

    with contextlib.ExitStack() as stack:
        for name, mod in modules.items():
            stack.callback(mod.register_forward_pre_hook(lambda m, i, name=name: add(name, i[0])).remove)
        run_body(base, ids, None, chunk=chunk, lengths=lengths)
    return {name: (s / max(count, 1)).cpu().contiguous() for name, s in sums.items()}


def write_shipped(base: Base) -> Path:
    """Write the base's samples, taken in float32, into credo's assets: what `python -m credo.hyper.keep_stats` does
    for the embedded base (rerun it when the recipe above changes, and commit the file)."""
    rows = _samples(base, torch.float32)
    path = _shipped_path(base)
    save_tensors_atomic(path, {"ids": torch.tensor([t for r in rows for t in r], dtype=torch.int32),
                               "lengths": torch.tensor([len(r) for r in rows], dtype=torch.int32)})
    return path


def forget(base: Base) -> None:
    """Drop the cached moments and text (a first compile on a new base, for benchmarks)."""
    _path(base).unlink(missing_ok=True)


if __name__ == "__main__":
    from credo.base import load_base

    with torch.inference_mode():
        print(write_shipped(load_base(None)))
