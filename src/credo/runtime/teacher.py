"""Batched teacher and student passes shared by the compilers that learn from the teacher (`steer`, `distill`, `stack`).

The teacher is the base with a context (the manifesto) ahead of the conversation; its KV state is computed once and
shared by every sequence of a batch (a generation attends to one copy of it, `credo.runtime.shared_prefix`).
Sequences are tokenised exactly as `TorchEngine` does (BOS + context, then the conversation, then the answer), so
figures measured here agree with `credo.runtime.fidelity.measure`, only faster: on CPU the 262k-token output head dominates,
and a batch of B rows costs little more than one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from tqdm import tqdm

from credo.base import cache_dir, cache_of
from credo.fsutil import save_tensors_atomic
from credo.manifesto import manifesto_context
from credo.probes import heldout_prompts
from credo.runtime import shared_prefix
from credo.runtime.fidelity import fidelity_from_kl, kl_from_logits
from credo.runtime.precision import of
from credo.runtime.prefix import PrefixState, keep_rows

if TYPE_CHECKING:
    from credo.base import Base, Prompt
    from credo.manifesto import Manifesto
    from credo.runtime.identity import Identity

Hooks = Callable[[], contextlib.AbstractContextManager]


@dataclass
class Answer:
    """A teacher's greedy answer and, per answer token, its top-k next-token log-probabilities (the distillation target)."""

    ids: list[int]
    top_ids: torch.Tensor  # (T, k) long; k = 0 when only the tokens were asked for
    top_logp: torch.Tensor  # (T, k) float; for k = 1 (greedy only) approximate to ~1e-2: no KL reads it


def no_hooks() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def layer_hooks(layer: Identity | None, base: Base) -> Hooks:
    return (lambda: layer.applied(base.model)) if layer is not None else no_hooks


def lower_tag(layer: Identity | None) -> str:
    """What identifies a lower layer in work-folder keys: its kind, manifesto and payload hashes."""
    if layer is None:
        return ""
    return json.dumps([layer.kind, layer.info.manifesto.get("sha256"), layer.info.files, layer.info.params], sort_keys=True, default=str)


def chain(*hooks: Hooks) -> Hooks:
    """Several forward-pass changes active at once (a lower layer and the one being compiled on top of it)."""

    def enter() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for h in hooks:
            stack.enter_context(h())
        return stack

    return enter


class Runner:
    """One side of a comparison: the base with `context` (may be '') ahead and `hooks` active on the forward pass."""

    def __init__(self, base: Base, context: str = "", hooks: Hooks = no_hooks, batch: int = 8):
        self.base, self.hooks, self.batch = base, hooks, batch
        self.context_ids = base.encode(context, bos=True)
        self._prefix: PrefixState | None = None
        self.pad = base.tokenizer.pad_token_id if base.tokenizer.pad_token_id is not None else 0

    @classmethod
    def for_layer(cls, base: Base, layer: Identity | None, batch: int = 8) -> Runner:
        """The run a layer makes: its context text (the teacher's manifesto, or none) and its forward-pass changes."""
        ctx = layer.context(base) if layer is not None else ""
        return cls(base, ctx, layer_hooks(layer, base), batch)

    def conv(self, prompt: Prompt) -> list[int]:
        return self.base.chat_ids(prompt)

    @torch.no_grad()
    def prefix(self) -> PrefixState:
        if self._prefix is None:
            with self.hooks():
                out = self.base.forward(torch.tensor([self.context_ids]), keep=1, use_cache=True)
            self._prefix = PrefixState.from_cache(self.context_ids, cache_of(out))
        return self._prefix

    def _cache(self, rows: int, room: int, state: PrefixState | None = None) -> Any:
        """The context's state (or `state`) over `rows` rows, with room for `room` more tokens written in place (in the
        autocast dtype when autocast is on: recasting a float32 past at every step was a sixth of a hyper generation)."""
        device = self.base.device.type
        dtype = torch.get_autocast_dtype(device) if room and torch.is_autocast_enabled(device) else None
        return (state if state is not None else self.prefix()).to_cache(self.base.model.config, rows, room, dtype)

    # --- teacher-forced -------------------------------------------------------------------------------------------
    def forward(self, seqs: Sequence[list[int]], keep: Sequence[tuple[int, int]] | None = None, grad: bool = False) -> list[torch.Tensor]:
        """Logits at positions [a, b) of each sequence (which follows the context). Right padding needs no mask.

        With `keep` None only the last position's logits are computed (for callers that read hidden states by hooks)."""
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [self.pad] * (width - len(s)) for s in seqs])
        keep = keep if keep is not None else [(width - 1, width)] * len(seqs)
        first = min(a for a, _ in keep)
        manager = contextlib.nullcontext() if grad else torch.no_grad()
        with manager, self.hooks():
            out = self.base.forward(ids, self._cache(len(seqs), width), keep=width - first)
        logits = out.logits
        return [logits[i, a - first : b - first].float() for i, (a, b) in enumerate(keep)]

    def answer_logits(self, prompts: Sequence[Prompt], answers: Sequence[list[int]], grad: bool = False) -> list[torch.Tensor]:
        """Per prompt, (len(answer), vocab) logits predicting each answer token: what `TorchEngine.answer_logits` gives.

        Rows are padded on the left of the conversation (masked, positions kept) so that every answer ends at the right
        edge: the 262k-wide output head then runs on the answer tokens alone.
        """
        seqs = [self.conv(p) + list(a[:-1]) for p, a in zip(prompts, answers)]
        ids, mask, pos = self._left_padded(seqs)
        keep = max(len(a) for a in answers)
        manager = contextlib.nullcontext() if grad else torch.no_grad()
        with manager, self.hooks():
            out = self.base.forward(ids, self._cache(len(seqs), ids.shape[1]), keep=keep, attention_mask=mask, position_ids=pos)
        return [out.logits[i, keep - len(a) :].float() for i, a in enumerate(answers)]

    def _left_padded(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids padded between the shared context and each sequence, the mask that hides the pads, and positions
        that skip them, so each row computes what it would alone."""
        rows, width, start = len(seqs), max(len(s) for s in seqs), len(self.context_ids)
        ids = torch.tensor([[self.pad] * (width - len(s)) + list(s) for s in seqs])
        mask = torch.ones(rows, start + width, dtype=torch.long)
        pos = torch.full((rows, width), start, dtype=torch.long)
        for r, s in enumerate(seqs):
            mask[r, start : start + width - len(s)] = 0
            pos[r, width - len(s) :] = torch.arange(start, start + len(s))
        return ids, mask, pos

    # --- generation -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], max_tokens: int, topk: int = 32, progress: str = "") -> list[Answer]:
        """Greedy answers for many prompts, a batch at a time, stopping at EOS or the transcript's next turn."""
        answers: list[Answer] = []
        bar = tqdm(total=len(prompts), desc=progress or "teacher", disable=not progress, leave=False)
        for i in range(0, len(prompts), self.batch):
            answers += self.generate_batch(prompts[i : i + self.batch], max_tokens, topk)
            bar.update(len(prompts[i : i + self.batch]))
        bar.close()
        return answers

    @torch.no_grad()
    def generate_batch(self, prompts: Sequence[Prompt], max_tokens: int, topk: int,
                       on_step: Callable[[list[int]], None] | None = None, limits: Sequence[int] | None = None) -> list[Answer]:
        """Greedy answers to one batch. Rows that have stopped are dropped from the batch once a quarter of it has
        (a chat answer often ends long before the cap). `on_step` hears, before each forward, which prompts that
        forward's rows hold (by index), for callers that read the forward through hooks; `limits` caps rows one by one.

        With the shared prefix, the prompts are read in groups of similar length (`length_groups`), each padded only to
        its own longest, and their states joined into one left-padded cache: the same answers as one wide prefill,
        which spent most of its time on padding when the lengths differ (a hyper compile's prompts: 1.9x)."""
        convs = [self.conv(p) for p in prompts]
        rows = len(convs)
        ids, mask, pos = self._left_padded(convs)
        room, stop_ids = ids.shape[1] + max_tokens, self.base.stop_ids
        shared = shared_prefix.fits(self.base.model.config, len(self.context_ids) + room)
        if shared:  # the manifesto is kept once; the cache holds the rows' own tokens alone
            cache, mask = self._cache(rows, room, self.prefix().empty()), mask[:, len(self.context_ids) :]
            scope: contextlib.AbstractContextManager = shared_prefix.active(self.base.model, self.prefix())
        else:
            cache, scope = self._cache(rows, room), contextlib.nullcontext()
        done = [False] * rows
        active = list(range(rows))  # the prompt each batch row answers
        out_ids: list[list[int]] = [[] for _ in range(rows)]
        tops: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(rows)]
        next_pos = pos[:, -1] + 1
        groups = length_groups([len(c) for c in convs]) if shared else [list(range(rows))]
        with self.hooks(), scope:
            for step in range(max_tokens):
                if step == 0:
                    token, top_ids, top_logp = self._prefill(ids, mask, pos, cache, groups, topk, on_step)
                else:
                    if on_step is not None:
                        on_step(active)
                    token, top_ids, top_logp = self._next(ids, cache, mask, pos, topk)
                for j, r in enumerate(active):
                    if done[r]:
                        continue
                    out_ids[r].append(int(token[j]))
                    tops[r].append((top_ids[j], top_logp[j]))
                    if int(token[j]) in stop_ids or self._hit_stop(out_ids[r]) or (limits is not None and len(out_ids[r]) >= limits[r]):
                        done[r] = True
                if all(done):
                    break
                mask = torch.cat([mask, torch.ones(len(active), 1, dtype=torch.long)], 1)
                still = [j for j, r in enumerate(active) if not done[r]]
                if len(still) <= 0.75 * len(active):
                    keep = torch.tensor(still)
                    cache = keep_rows(cache, keep, max_tokens - step)
                    token, mask, next_pos, active = token[keep], mask[keep], next_pos[keep], [active[j] for j in still]
                ids = token.unsqueeze(1)
                pos = next_pos.unsqueeze(1)
                next_pos = next_pos + 1
        return [self._answer(o, t) for o, t in zip(out_ids, tops)]

    def _next(self, ids: torch.Tensor, cache: Any, mask: torch.Tensor, pos: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward over `ids` (extending `cache` in place): each row's greedy token, its top-k ids and log-probs."""
        if topk <= 1:  # greedy alone: the body, then the cheap exact argmax (the output head dominates on CPU)
            out = self.base.forward(ids, cache, body_only=True, attention_mask=mask, position_ids=pos)
            token, best = self.base.greedy_next(out.last_hidden_state[:, -1], of(self.base).greedy_head, logp=topk == 1)
            top_logp = best[:, None] if best is not None else torch.empty(len(token), 0)
            return token, token[:, None][:, :topk], top_logp  # topk 0: the tokens alone, no log-probabilities
        out = self.base.forward(ids, cache, keep=1, attention_mask=mask, position_ids=pos)
        top_logp, top_ids = torch.log_softmax(out.logits[:, -1].float(), -1).topk(topk, -1)
        return top_ids[:, 0], top_ids, top_logp

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any, groups: list[list[int]], topk: int,
                 on_step: Callable[[list[int]], None] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The prompts' forward, one group of rows at a time, each group's states written right-aligned into `cache`
        (whose rows hold their own tokens alone: the shared-prefix layout) and the padding columns left zero and masked."""
        if len(groups) == 1:
            if on_step is not None:
                on_step(groups[0])
            return self._next(ids, cache, mask, pos, topk)
        width, parts = ids.shape[1], []
        buffers = [(layer.keys._base, layer.values._base) for layer in cache.layers]  # `_give_room`'s buffers
        for buf_k, buf_v in buffers:
            buf_k[:, :, :width].zero_()
            buf_v[:, :, :width].zero_()
        for group in groups:
            if on_step is not None:
                on_step(group)
            index, own = torch.tensor(group), max(int(mask[r].sum()) for r in group)
            part = self._cache(len(group), own, self.prefix().empty())
            parts.append((index, self._next(ids[index, width - own :], part, mask[index, width - own :], pos[index, width - own :], topk)))
            for (buf_k, buf_v), layer in zip(buffers, part.layers):
                buf_k[index, :, width - own : width], buf_v[index, :, width - own : width] = layer.keys, layer.values
        for (buf_k, buf_v), layer in zip(buffers, cache.layers):
            layer.keys, layer.values = buf_k[:, :, :width], buf_v[:, :, :width]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = width
        token, top_ids, top_logp = (torch.empty(ids.shape[0], *t.shape[1:], dtype=t.dtype) for t in parts[0][1])
        for index, (t, ti, tl) in parts:
            token[index], top_ids[index], top_logp[index] = t, ti, tl
        return token, top_ids, top_logp

    def _hit_stop(self, ids: list[int]) -> bool:
        stops = self.base.stop_strings
        return bool(stops) and any(s in self.base.decode(ids[-8:]) for s in stops)

    def _answer(self, ids: list[int], tops: list[tuple[torch.Tensor, torch.Tensor]]) -> Answer:
        """The answer as the engine's scoring sees it: every generated token, the stop (EOS or '\\nUser:') included."""
        return Answer(ids, torch.stack([t[0] for t in tops]), torch.stack([t[1] for t in tops]))


def length_groups(lengths: Sequence[int], call_cost: int = 32) -> list[list[int]]:
    """Rows grouped by length so that the padded tokens plus `call_cost` per extra forward call are fewest (one
    forward of the body costs about as much as 32 more tokens on CPU); returns row indices per group, shortest first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best, cut = [0] + [0] * n, [0] * (n + 1)  # best[i]: cheapest cover of the i shortest rows; cut[i]: where its last group starts
    for i in range(1, n + 1):
        best[i], cut[i] = min((best[j] + (i - j) * lengths[order[i - 1]] + call_cost, j) for j in range(i))
    groups, i = [], n
    while i > 0:
        groups.append(order[cut[i] : i])
        i = cut[i]
    return groups[::-1]


def kl_topk(top_ids: torch.Tensor, top_logp: torch.Tensor, row_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ row) per position on the partition {top-k tokens, everything else}: a lower bound on the full KL.

    Only the teacher's top-k log-probabilities are stored; the tail bucket keeps the loss honest about the mass the
    student puts outside them (a plain renormalised top-k loss would not see it).
    """
    lr = torch.log_softmax(row_logits.float(), -1)
    row_top = lr.gather(-1, top_ids)
    t_tail = torch.log1p(-top_logp.exp().sum(-1).clamp(max=1 - 1e-6))
    r_tail = torch.log1p(-row_top.exp().sum(-1).clamp(max=1 - 1e-6))
    kl = (top_logp.exp() * (top_logp - row_top)).sum(-1)
    return kl + t_tail.exp() * (t_tail - r_tail)


@torch.no_grad()
def mean_topk_kl(runner: Runner, prompts: Sequence[Prompt], answers: Sequence[Answer]) -> float:
    """Mean `kl_topk` per answer token of `runner` against the teacher's saved answers, in the runner's batches: the
    objective distill trains on and steer picks its layer and strength by."""
    total, tokens = 0.0, 0
    for i in range(0, len(prompts), runner.batch):
        ans = answers[i : i + runner.batch]
        for a, logits in zip(ans, runner.answer_logits(prompts[i : i + runner.batch], [x.ids for x in ans])):
            total += float(kl_topk(a.top_ids, a.top_logp, logits).sum())
            tokens += len(a.ids)
    return total / max(tokens, 1)


@dataclass
class Scored:
    """Mean KL(teacher ‖ row) per answer token, and fidelity relative to the bare base (as `credo.runtime.fidelity` defines it)."""

    kl: dict[str, float]
    fidelity: dict[str, float]
    tokens: int
    prompts: int


def score(base: Base, teacher: Runner, rows: dict[str, Runner], prompts: Sequence[Prompt], answers: Sequence[Answer], chunk: int = 4,
          progress: str = "", reference: Runner | None = None) -> Scored:
    """Full-vocabulary KL of each row to the teacher on the teacher's answers. The 'base' row, the denominator, is the
    bare base unless `reference` says otherwise (for a stacked layer: the identity it was stacked on)."""
    rows = {"base": reference or Runner(base, "")} | {k: v for k, v in rows.items() if k != "base"}
    sums = dict.fromkeys(rows, 0.0)
    tokens = 0
    for i in tqdm(range(0, len(prompts), chunk), desc=progress or "fidelity", disable=not progress, leave=False):
        ps, ans = prompts[i : i + chunk], [a.ids for a in answers[i : i + chunk]]
        t_logits = teacher.answer_logits(ps, ans)
        tokens += sum(len(a) for a in ans)
        for name, runner in rows.items():
            for t, r in zip(t_logits, runner.answer_logits(ps, ans)):
                sums[name] += float(kl_from_logits(t, r).sum())
    kl = {k: v / max(tokens, 1) for k, v in sums.items()}
    fid = {k: fidelity_from_kl(v, kl["base"]) for k, v in kl.items()}
    return Scored(kl, fid, tokens, len(prompts))


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """Base weights never receive gradients (they are not trained, and their grads would cost 170M floats)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


# --- cached teacher answers ----------------------------------------------------------------------------------------
def work_dir(*parts: str) -> Path:
    """A work folder keyed by what its contents depend on (base, manifesto, settings): rerunning the same job finds it."""
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / "work" / key


def save_answers(path: Path, prompts: Sequence[str], answers: Sequence[Answer]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for i, a in enumerate(answers):
        tensors[f"{i}.ids"] = torch.tensor(a.ids, dtype=torch.long)
        tensors[f"{i}.top_ids"], tensors[f"{i}.top_logp"] = a.top_ids.contiguous(), a.top_logp.float().contiguous()
    save_tensors_atomic(path, tensors, metadata={"prompts": json.dumps(list(prompts[: len(answers)]))})


def load_answers(path: Path) -> dict[str, Answer]:
    """Saved answers by `prompt_key`."""
    if not path.is_file():
        return {}
    with safe_open(str(path), "pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
        return {
            p: Answer(f.get_tensor(f"{i}.ids").tolist(), f.get_tensor(f"{i}.top_ids"), f.get_tensor(f"{i}.top_logp"))
            for i, p in enumerate(prompts)
        }


def prompt_key(prompt: Prompt) -> str:
    """A prompt as the text that keys its saved answer and a work folder: itself, or a conversation as JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def teacher_answers(runner: Runner, prompts: Sequence[Prompt], max_tokens: int, topk: int, path: Path | None, progress: str = "") -> list[Answer]:
    """Greedy teacher answers, saved to `path` after every batch: an interrupted run picks up where it stopped."""
    done = load_answers(path) if path is not None else {}
    unique = {prompt_key(p): p for p in prompts}
    todo = [k for k in unique if k not in done or done[k].top_ids.shape[-1] < topk]
    bar = tqdm(total=len(todo), desc=progress or "teacher answers", disable=not progress or not todo, leave=False)
    for i in range(0, len(todo), runner.batch):
        batch = todo[i : i + runner.batch]
        for k, a in zip(batch, runner.generate_batch([unique[k] for k in batch], max_tokens, topk)):
            done[k] = a
        if path is not None:
            save_answers(path, list(done), list(done.values()))
        bar.update(len(batch))
    bar.close()
    return [done[prompt_key(p)] for p in prompts]


def heldout_report(base: Base, manifesto: Manifesto, rows: dict[str, Runner], limit: int, max_tokens: int = 24,
                   progress: bool = True, teacher: Runner | None = None, reference: Runner | None = None, tag: str = "") -> dict[str, Any]:
    """Fidelity of each row on held-out prompts (never trained on), against the teacher with the manifesto in context.

    A stacked layer passes its own teacher (the lower layer plus the new manifesto) and reference (the lower layer)."""
    prompts = heldout_prompts(manifesto, limit)
    teacher = teacher or Runner(base, manifesto_context(manifesto, base))
    path = work_dir("heldout", base.sha256, manifesto.sha256, str(limit), str(max_tokens), tag) / "answers.safetensors"
    answers = teacher_answers(teacher, prompts, max_tokens, 1, path, progress="held-out teacher" if progress else "")
    scored = score(base, teacher, rows, prompts, answers, progress="held-out fidelity" if progress else "", reference=reference)
    out: dict[str, Any] = {"heldout_prompts": scored.prompts, "heldout_tokens": scored.tokens, "kl_base": round(scored.kl["base"], 4)}
    for name in rows:
        out[f"kl_{name}"] = round(scored.kl[name], 4)
        out[f"fidelity_{name}"] = round(scored.fidelity[name], 4)
    return out


def compile_report(base: Base, manifesto: Manifesto, kind: str, hooks: Hooks, control: Callable[[], Hooks] | None, heldout: int,
                   lower: Identity | None = None, batch: int = 8) -> dict[str, Any]:
    """The held-out figures a compiler reports: fidelity of the new layer (`hooks`) and, when `control` is given, of
    the shuffled-manifesto control it compiles (timed here). On top of `lower`, every run keeps the lower layer active
    and the reference is the lower identity, not the bare base."""
    began = time.perf_counter()
    low_ctx, low_hooks = (lower.context(base) if lower else ""), layer_hooks(lower, base)
    rows = {kind: Runner(base, low_ctx, chain(low_hooks, hooks), batch)}
    out: dict[str, Any] = {}
    if control is not None:
        start = time.perf_counter()
        control_hooks = control()
        out["control_compile_seconds"] = round(time.perf_counter() - start, 1)
        rows["control"] = Runner(base, low_ctx, chain(low_hooks, control_hooks), batch)
    teacher = Runner(base, low_ctx + manifesto_context(manifesto, base), low_hooks, batch) if lower else None
    reference = Runner(base, low_ctx, low_hooks, batch) if lower else None
    out |= heldout_report(base, manifesto, rows, heldout, teacher=teacher, reference=reference, tag=lower_tag(lower))
    out["report_seconds"] = round(time.perf_counter() - began, 1)  # of the layer's compile_seconds, what measuring it took
    return out
