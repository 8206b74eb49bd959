"""`distill`: the manifesto baked into a LoRA by context distillation.

The teacher is the base with the manifesto in context; the student is the base with the adapter and no manifesto. The
teacher answers training prompts (situations drawn from each clause, questions that stop where a clause states a fact,
some situations again as the second turn of a conversation, the manifesto's own examples, generic chat and a wider
everyday pool; held-out prompts are never used) and keeps, per answer token, its top-k next-token
log-probabilities. The student is trained on forward KL(teacher ‖ student) over those top-k tokens plus one bucket for
the rest of the vocabulary (the prompt-baking objective; a sampled token alone carries far less signal), with a gentle
learning rate, warm-up and clipping, and the adapter of the best validation step (step 0, the base, included) is kept.

Work goes to a folder keyed by base, manifesto and settings (teacher answers, then a checkpoint every few steps, all
safetensors + json): interrupting and rerunning the same compile resumes where it stopped. `budget` bounds the training
in minutes (`10m`) or steps (`200`).

Under `accelerate launch` (or `torchrun`) the processes share one run (`Team`): each step's batch is split between them
and their gradients summed, so N processes take the steps one would, N times as fast; the main process answers as the
teacher first (the others read its cached answers), keeps the clock and alone writes checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from tqdm import tqdm

from credo.errors import CredoError
from credo.fsutil import save_tensors_atomic, write_text_atomic
from credo.layers.lora import DEFAULT_TARGETS, LoraLayer, LoraWeights, lora_hooks
from credo.layers.registry import register
from credo.manifesto import manifesto_context
from credo.probes import probes, second_turns
from credo.runtime.precision import compute, of
from credo.runtime.teacher import (
    Answer,
    Hooks,
    Runner,
    chain,
    compile_report,
    frozen,
    kl_topk,
    layer_hooks,
    lower_tag,
    mean_topk_kl,
    no_hooks,
    prompt_key,
    teacher_answers,
    work_dir,
)
from credo.runtime.team import Team

if TYPE_CHECKING:
    from credo.base import Base, Prompt
    from credo.layers.layer import Layer, LayerInfo
    from credo.manifesto import Manifesto

CHECKPOINT = "checkpoint.safetensors"
STATE = "checkpoint.json"
ANSWERS = "answers.safetensors"


@dataclass
class DistillConfig:
    budget: str = "10m"  # the whole compile in minutes ("10m", "1.5m": teacher answers + training) or training steps ("200")
    r: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    lr: float = 5e-4  # keep it gentle: 2e-3 peaks within a few steps and then drifts; 5e-4 keeps improving
    clip: float = 1.0  # gradient-norm clipping (0: off): batches of 4 give spiky gradients
    warmup: int = 8  # steps of linear lr warm-up; keep it: without it the first Adam step overshoots
    decay: float = 0.1  # cosine decay over the budget down to this share of lr (1: constant lr)
    batch: int = 4
    answer_tokens: int = 24  # teacher answer length: generation is the slow part on CPU
    teacher_batch: int = 16  # rows per batched teacher generation (decoding B rows costs little more than one)
    topk: int = 256  # teacher log-probabilities kept per answer token; 32 leaves too much in the tail
    prompts: int = 0  # training prompts to use (0: all)
    chat: bool = True  # add the wide everyday pool (credo.chat_pool) to the manifesto's own situations
    two_turn: int = 16  # train situations also taught as a second turn after an earlier exchange, as hyper's
    facts: bool = True  # keep True: also teach questions that stop where a clause states a price, time or name
    fact_weight: int = 1  # times each fact question is taught per epoch; 4 helped the shops it was tried on, not an unseen one
    checkpoint_every: int = 5
    validate: int = 12  # every N steps, KL on up to 16 training prompts held apart; the best step's adapter is kept (0: off)
    heldout: int = 12  # held-out prompts for the compile report (0: no report)
    control: bool = True  # also distill the shuffled-manifesto control (same steps) and report its fidelity
    seed: int = 0

    def __post_init__(self) -> None:
        Budget.parse(self.budget)  # a bad budget fails while the settings are read, before any model loads
        if self.validate < 0 or self.two_turn < 0:
            raise CredoError("distill: validate and two_turn cannot be negative")
        if not 0 < self.decay <= 1:
            raise CredoError("distill: decay must be in (0, 1] (the share of lr left at the end of the budget; 1: constant)")
        if self.r < 1 or self.batch < 1 or self.topk < 1 or self.answer_tokens < 1 or self.checkpoint_every < 1 or self.fact_weight < 1:
            raise CredoError("distill: r, batch, topk, answer_tokens, fact_weight and checkpoint_every must be at least 1")


@dataclass(frozen=True)
class Budget:
    minutes: float | None = None
    steps: int | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        text = str(text).strip().lower()
        if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*(m|min|minutes?)", text):
            minutes = float(m.group(1))
            if minutes > 0:
                return cls(minutes=minutes)
        if text.isdigit() and int(text) > 0:
            return cls(steps=int(text))
        raise CredoError(f"budget must be minutes like '10m' or a number of steps like '200', got {text!r}")

    def spent(self, step: int, seconds: float) -> bool:
        return (self.steps is not None and step >= self.steps) or (self.minutes is not None and seconds >= self.minutes * 60)

    def fraction(self, step: int, seconds: float) -> float:
        """How much of the budget is spent, 0..1 (the larger of the step and time shares)."""
        shares = [step / self.steps] if self.steps is not None else []
        shares += [seconds / (self.minutes * 60)] if self.minutes is not None else []
        return min(max(shares, default=0.0), 1.0)

    def __str__(self) -> str:
        return f"{self.minutes:g}m" if self.minutes is not None else f"{self.steps} steps"


@dataclass
class Progress:
    """What a checkpoint records besides the tensors: enough to continue the same run."""

    step: int = 0
    seconds: float = 0.0  # training time spent so far, over all sessions
    losses: list[float] = field(default_factory=list)
    val: list[list[float]] = field(default_factory=list)  # [step, validation KL]
    best_step: int = 0
    best_kl: float | None = None


def training_prompts(manifesto: Manifesto, limit: int = 0, chat: bool = False, two_turn: int = 0, facts: bool = False) -> list[Prompt]:
    """The train probes (held-out ones never: the split is by hash, the same on every run), then `two_turn` of the
    manifesto's own as second turns."""
    train = [p for p in probes(manifesto, chat=chat, facts=facts) if not p.heldout]
    train = train[:limit] if limit else train
    situations = [p for p in train if p.origin not in ("example", "chat")]
    return [p.prompt for p in train] + [t.messages for t in second_turns(manifesto, situations, two_turn)]


def fact_rows(manifesto: Manifesto, prompts: list[Prompt]) -> list[int]:
    """Which training prompts ask for a fact the manifesto states (alone or as a second turn)."""
    asked = {p.prompt for p in probes(manifesto, facts=True) if p.fact}
    return [i for i, p in enumerate(prompts) if (p if isinstance(p, str) else p[-1]["content"]) in asked]


def taught(manifesto: Manifesto, prompts: list[Prompt], rows: list[int], fact_weight: int) -> list[int]:
    """The rows of an epoch: `rows` (indices into `prompts`), then each fact question among them again until it comes
    `fact_weight` times."""
    if fact_weight <= 1:
        return rows
    facts = set(fact_rows(manifesto, prompts))
    return rows + [i for i in rows if i in facts] * (fact_weight - 1)


def validation_split(n: int, validate: int, most: int = 16) -> tuple[list[int], list[int]]:
    """(fit, validation) indices: every fifth training prompt validates, up to `most` of them, when there are enough
    prompts to spare. The cap keeps both the prompts lost to training and the time spent validating small: with the
    chat pool a fifth is some 36 prompts, and validating them every 4 steps would take half the training time."""
    if validate <= 0 or n < 10:
        return list(range(n)), []
    held = [i for i in range(n) if i % 5 == 4][:most]
    apart = set(held)
    return [i for i in range(n) if i not in apart], held


def batch_for(step: int, n: int, batch: int, seed: int) -> list[int]:
    """The indices of step `step`: epochs of fixed shuffles, so a resumed run sees the same order as an unbroken one."""
    per_epoch = max(1, -(-n // batch))
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return order[k * batch : (k + 1) * batch]


class Trainer:
    """Trains one LoRA against cached teacher answers, checkpointing into `work` so that a rerun resumes."""

    def __init__(self, base: Base, config: DistillConfig, work: Path, student_hooks: Hooks = no_hooks, student_context: str = "",
                 team: Team | None = None):
        self.base, self.config, self.work = base, config, work
        self.team = team or Team.of(base)
        self.student_hooks, self.student_context = student_hooks, student_context
        targets = tuple(config.targets)
        self.weights = LoraWeights.init(base.model, r=config.r, alpha=config.alpha, targets=targets, seed=config.seed)
        self.weights.base_model = base.spec
        for t in self.weights.parameters():
            t.requires_grad_(True)
        self.opt = torch.optim.AdamW(self.weights.parameters(), lr=config.lr, weight_decay=0.0)
        self.progress = Progress()
        self.best: list[torch.Tensor] | None = None  # the adapter at the best validation step so far
        self._resume()

    # --- checkpoint ---------------------------------------------------------------------------------------------
    def _resume(self) -> None:
        found = load_checkpoint(self.work, self.weights.parameters(), self.opt)
        if found is not None:
            tensors, self.progress = found
            if "best.0" in tensors:
                self.best = [tensors[f"best.{i}"] for i in range(len(self.weights.parameters()))]
        if self.team.size > 1:  # every process reads the main one's checkpoint: they must all have found the same one
            lost = float(self.team.agree(self.progress.step) != self.progress.step)
            if float(self.team.total(torch.tensor([lost], dtype=torch.float64))) > 0:
                raise CredoError(f"distill: the processes found different checkpoints in {self.work}; "
                                 "put CREDO_CACHE on a folder every process shares")

    def save(self) -> None:
        """Write the checkpoint (the main process alone: the others hold the same weights)."""
        if not self.team.main:
            return
        extra = {f"best.{i}": t.contiguous() for i, t in enumerate(self.best or [])}
        save_checkpoint(self.work, self.weights.parameters(), self.opt, self.progress, self.config, extra)

    # --- training -----------------------------------------------------------------------------------------------
    def loss(self, prompts: list[Prompt], answers: list[Answer]) -> torch.Tensor:
        hooks = chain(self.student_hooks, lambda: lora_hooks(self.base.model, self.weights))
        student = Runner(self.base, self.student_context, hooks, batch=len(prompts))
        with compute(self.base, weights=False):  # the chosen precision (autocast alone under bf16); weights stay fp32
            logits = student.answer_logits(prompts, [a.ids for a in answers], grad=True)
        total = sum(kl_topk(a.top_ids, a.top_logp, lg).sum() for a, lg in zip(answers, logits))
        return total / sum(len(a.ids) for a in answers)

    @torch.no_grad()
    def validation_kl(self, prompts: list[Prompt], answers: list[Answer]) -> float:
        """Token-weighted KL over the validation prompts, each process scoring its share of them."""
        size, tokens = self.config.batch * 2, max(sum(len(a.ids) for a in answers), 1)
        prompts, answers = self.team.shard(prompts), self.team.shard(answers)
        total = sum(float(self.loss(prompts[i : i + size], answers[i : i + size])) * sum(len(a.ids) for a in answers[i : i + size])
                    for i in range(0, len(prompts), size))
        if self.team.size > 1:
            total = float(self.team.total(torch.tensor([total], dtype=torch.float64)))
        return total / tokens

    def step_loss(self, prompts: list[Prompt], answers: list[Answer]) -> float:
        """Gradients of the batch's loss left on the weights, and the loss. A team splits the batch: each process weighs
        its share's loss by its share of the tokens, and the summed gradients are those of the whole batch."""
        params = self.weights.parameters()
        self.opt.zero_grad(set_to_none=True)
        if self.team.size == 1:
            loss = self.loss(prompts, answers)
            loss.backward()
            return loss.detach().item()
        share = self.team.shard(list(range(len(prompts))))
        local = torch.zeros((), device=self.team.device)
        if share:  # a batch smaller than the team leaves some processes without a prompt: they add zeros
            mine = [answers[i] for i in share]
            local = self.loss([prompts[i] for i in share], mine) * (sum(len(a.ids) for a in mine) / max(sum(len(a.ids) for a in answers), 1))
            local.backward()
        flat = torch.cat([(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1) for t in params] + [local.detach().reshape(1)])
        flat = self.team.total(flat)
        at = 0
        for t in params:
            t.grad = flat[at : at + t.numel()].view_as(t).to(t.dtype)
            at += t.numel()
        return float(flat[-1])

    def _validate(self, val: tuple[list[Prompt], list[Answer]]) -> None:
        """Small models over-fit a few dozen prompts fast: track held-apart KL and remember the best adapter."""
        p = self.progress
        value = self.validation_kl(*val)
        p.val.append([p.step, round(value, 5)])
        if p.best_kl is None or value < p.best_kl:
            p.best_kl, p.best_step = value, p.step
            self.best = [t.detach().clone() for t in self.weights.parameters()]

    def train(self, prompts: list[Prompt], answers: list[Answer], budget: Budget, progress: bool = True, label: str = "distill",
              val: tuple[list[Prompt], list[Answer]] | None = None) -> Progress:
        """Train until the budget is spent; with `val`, the weights left at the end are those of the best validation step."""
        p = self.progress
        bar = tqdm(total=budget.steps, initial=p.step, desc=label, disable=not progress or not self.team.main, leave=False, unit="step")
        session = time.perf_counter()
        offset = p.seconds
        with frozen(self.base.model), _save_on_interrupt(self):
            if val and val[0] and not p.val:  # step 0 is the base itself: an adapter that never beats it stays a no-op
                self._validate(val)
            while not budget.spent(p.step, p.seconds):
                for group in self.opt.param_groups:
                    group["lr"] = learning_rate(self.config, p.step, budget.fraction(p.step, p.seconds))
                idx = batch_for(p.step, len(prompts), self.config.batch, self.config.seed)
                value = self.step_loss([prompts[i] for i in idx], [answers[i] for i in idx])
                if self.config.clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.weights.parameters(), self.config.clip)
                self.opt.step()
                p.step += 1  # right after the update, so an interrupt never saves one without the other
                p.seconds = self.team.agree(offset + time.perf_counter() - session)  # one clock: every process stops at one step
                p.losses.append(round(value, 5))
                bar.update(1)
                bar.set_postfix(kl=f"{value:.3f}", min=f"{p.seconds / 60:.1f}")
                if val and val[0] and p.step % self.config.validate == 0:
                    self._validate(val)
                if p.step % self.config.checkpoint_every == 0:
                    self.save()
            if val and val[0] and (not p.val or p.val[-1][0] != p.step):
                self._validate(val)
        self.save()  # the checkpoint keeps the current trajectory, so a longer budget continues it
        bar.close()
        for t in self.weights.parameters():
            t.requires_grad_(False)
        if self.best is not None and p.best_step != p.step:
            with torch.no_grad():
                for t, b in zip(self.weights.parameters(), self.best):
                    t.copy_(b)
        return p


def save_checkpoint(work: Path, params: list[torch.Tensor], opt: torch.optim.Optimizer, progress: Progress, config: Any,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """The adapter, Adam's moments and the progress, written atomically: what an interrupted training resumes from."""
    tensors = {f"param.{i}": t.detach().contiguous() for i, t in enumerate(params)}
    for i, s in opt.state_dict()["state"].items():
        for k in ("step", "exp_avg", "exp_avg_sq"):
            tensors[f"adam.{i}.{k}"] = torch.as_tensor(s[k]).contiguous()
    save_tensors_atomic(work / CHECKPOINT, tensors | (extra or {}))
    write_text_atomic(work / STATE, json.dumps({"progress": asdict(progress), "config": asdict(config)}, indent=1))


def load_checkpoint(work: Path, params: list[torch.Tensor], opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Progress] | None:
    """Put `save_checkpoint`'s adapter and Adam moments back into `params` and `opt`; its tensors and progress (None:
    nothing saved yet)."""
    ck, st = work / CHECKPOINT, work / STATE
    if not (ck.is_file() and st.is_file()):
        return None
    tensors = load_file(str(ck))
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"param.{i}"])
    state = opt.state_dict()
    for i in range(len(params)):
        if f"adam.{i}.exp_avg" in tensors:
            state["state"][i] = {k: tensors[f"adam.{i}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")}
    opt.load_state_dict(state)
    return tensors, Progress(**json.loads(st.read_text())["progress"])


def learning_rate(config: DistillConfig, step: int, spent: float) -> float:
    """Linear warm-up, then cosine decay to `decay * lr` as the budget runs out: the last steps of a time budget are
    the quiet ones, so the adapter the budget ends on is not one noisy batch away from a better one. The schedule is
    a function of progress, so a resumed run takes the same path (a longer budget given later re-opens the lr)."""
    warm = min(1.0, (step + 1) / max(config.warmup, 1))
    return config.lr * warm * (config.decay + (1 - config.decay) * 0.5 * (1 + math.cos(math.pi * spent)))


@contextlib.contextmanager
def _save_on_interrupt(trainer: Trainer) -> Iterator[None]:
    """Ctrl-C keeps the steps done since the last checkpoint: the next run resumes from there."""
    try:
        yield
    except KeyboardInterrupt:
        trainer.save()
        raise


def _teacher_seconds(work: Path, spent: float, team: Team | None = None) -> float:
    """Teacher time summed over sessions (a resumed run finds its answers cached but still counts what they cost); in a
    team, the main process's count, the only one written."""
    if team is not None and not team.main:
        return team.agree(0.0)
    path = work / "teacher.json"
    total = (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0) + spent
    write_text_atomic(path, json.dumps({"seconds": round(total, 2)}))
    return team.agree(total) if team is not None else total


@torch.no_grad()
def mean_kl(base: Base, weights: LoraWeights | None, prompts: list[Prompt], answers: list[Answer], batch: int = 8) -> float:
    """The training objective over a whole prompt set, without gradients (before/after figures, tests)."""
    hooks = (lambda: lora_hooks(base.model, weights)) if weights is not None else no_hooks
    return mean_topk_kl(Runner(base, "", hooks, batch), prompts, answers)


def distill(manifesto: Manifesto, base: Base, config: DistillConfig, budget: Budget, lower: Layer | None = None,
            label: str = "distill", progress: bool = True) -> tuple[LoraWeights, Progress, dict[str, Any]]:
    """Teacher answers (cached), then training (resumable).

    With `lower` (stacking) both sides carry the lower layer: the teacher is the lower identity with the new manifesto
    in context, the student the lower identity with the adapter, so the adapter learns what the new text adds."""
    prompts = training_prompts(manifesto, config.prompts, config.chat, config.two_turn, config.facts)
    if not prompts:
        raise CredoError("distill: the manifesto yields no training prompts; add clauses or examples")
    low_ctx, low_hooks = (lower.context(base) if lower else ""), layer_hooks(lower, base)
    context = low_ctx + manifesto_context(manifesto, base)
    key = json.dumps({k: v for k, v in asdict(config).items() if k not in ("budget", "heldout", "control", "checkpoint_every", "teacher_batch")}
                     | {"precision": of(base).name}, sort_keys=True)  # a run resumes only in the precision it trained in
    # the prompt list is part of the key: a changed pool (or split) starts a fresh run instead of resuming a stale one
    work = work_dir("distill", base.sha256, context, lower_tag(lower), label, key, "\n".join(map(prompt_key, prompts)))
    teacher = Runner(base, context, low_hooks, batch=config.teacher_batch)
    team = Team.of(base)
    t0 = time.perf_counter()
    with team.main_first():
        answers = teacher_answers(teacher, prompts, config.answer_tokens, config.topk, work / ANSWERS,
                                  progress=f"{label}: teacher answers" if progress and team.main else "")
    teacher_seconds = _teacher_seconds(work, time.perf_counter() - t0, team)
    if budget.minutes is not None:  # a budget in minutes covers the whole compile: training gets what the teacher left
        budget = Budget(minutes=max(budget.minutes - teacher_seconds / 60, 1e-3))
    trainer = Trainer(base, config, work, low_hooks, low_ctx, team)
    resumed = trainer.progress.step
    fit, held = validation_split(len(prompts), config.validate)
    val = ([prompts[i] for i in held], [answers[i] for i in held])
    fit = taught(manifesto, prompts, fit, config.fact_weight)
    trainer.train([prompts[i] for i in fit], [answers[i] for i in fit], budget, progress=progress, label=label, val=val)
    figures = {
        "train_prompts": len(set(fit)),
        "validation_prompts": len(held),
        "best_step": trainer.progress.best_step if held else trainer.progress.step,
        "validation_kl_best": trainer.progress.best_kl,
        "teacher_seconds": round(teacher_seconds, 1),
        "steps": trainer.progress.step,
        "resumed_from_step": resumed,
        "train_seconds": round(trainer.progress.seconds, 1),
        "train_kl_first": trainer.progress.losses[0] if trainer.progress.losses else None,
        "train_kl_last": trainer.progress.losses[-1] if trainer.progress.losses else None,
        "work": str(work),
    }
    return trainer.weights, trainer.progress, figures


@register
class DistillLayer(LoraLayer):
    kind = "distill"
    order = 40
    Config = DistillConfig
    demo_settings = {"budget": "5m", "heldout": "0", "control": "false"}  # 5 minutes already follows the manifesto well

    @classmethod
    def build_on(cls, manifesto: Manifesto, base: Base, config: DistillConfig | None, info: LayerInfo, lower: Layer | None) -> DistillLayer:
        """Compile on top of `lower` (None: on the bare base); the report measures against the lower identity."""
        config = config or DistillConfig()
        budget = Budget.parse(config.budget)
        weights, progress, figures = distill(manifesto, base, config, budget, lower=lower)
        layer = cls(info, manifesto, weights)

        def control_weights(steps: Budget) -> LoraWeights:
            return distill(manifesto.shuffled(0), base, config, steps, lower=lower, label="control")[0]

        report_trained(layer, base, config, progress, figures, control_weights, lower)
        return layer


def report_trained(layer: LoraLayer, base: Base, config: Any, progress: Progress,
                   figures: dict, control_weights: Callable[[Budget], LoraWeights], lower: Layer | None = None) -> None:
    """What every trained LoRA records: its shape, its training figures, and (heldout > 0)
    its held-out fidelity against a shuffled manifesto trained exactly as long."""
    info = layer.info
    LoraLayer.describe(layer.weights, info)
    info.report.update(figures)
    if config.heldout > 0:
        def control() -> Hooks:
            cw = control_weights(Budget(steps=max(progress.step, 1)))
            return lambda: lora_hooks(base.model, cw)

        info.report.update(compile_report(base, layer.manifesto, layer.kind, lambda: layer.applied(base.model),
                                          control if config.control else None, config.heldout, lower))
