"""What the retraining baselines (`sft`, `dpo`) share: their data, their LoRA, their budget, their checkpoints, TRL.

credo claims a compiled layer does as well as retraining the model on the policy. These kinds are that retraining, done
the way people do it today (TRL's trainers on a PEFT LoRA), on what `distill` sees: the same training prompts (the
manifesto's situations and the everyday pool; held-out prompts never), the teacher's greedy answers, the same rank,
target modules, initial weights, warm-up and decay, under the same kind of budget. Only the objective differs: SFT
imitates the teacher's tokens, DPO prefers them to the bare base's answers, `distill` matches the teacher's whole
next-token distributions.

TRL wraps a copy of the base's modules that shares its tensors, so the base is never modified and not held twice.
Checkpoints are credo's own (safetensors + json under the compile's work folder), written every few steps and on
Ctrl-C; TRL's (pickled optimizer state) are never written or read. A rerun of the same compile resumes, and the data
order is a function of the step, so a resumed run sees what an unbroken one would. TRL is imported only here, and only
when one of these kinds compiles.

Under `accelerate launch` TRL's trainer runs data-parallel itself; credo keeps `batch` the whole step's batch (split
between the processes, as `distill` does), lets the main process alone answer first and write checkpoints, and gives
every process the main one's clock, so a budget in minutes stops them all at the same step.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from tqdm import tqdm

from credo.errors import CredoError
from credo.layers.kinds.distill import (
    CHECKPOINT,
    STATE,
    Budget,
    DistillConfig,
    Progress,
    _teacher_seconds,
    learning_rate,
    load_checkpoint,
    report_trained,
    save_checkpoint,
    taught,
    training_prompts,
)
from credo.layers.lora import DEFAULT_TARGETS, LoraLayer, LoraWeights, export_facts, gguf_arch
from credo.manifesto import manifesto_context
from credo.runtime.precision import of
from credo.runtime.teacher import Answer, Runner, frozen, prompt_key, teacher_answers, work_dir
from credo.runtime.team import Team

if TYPE_CHECKING:
    from credo.base import Base, Prompt
    from credo.layers.layer import LayerInfo
    from credo.manifesto import Manifesto

_D = DistillConfig  # defaults are distill's, so that the kinds differ in their objective alone


@dataclass
class RetrainConfig:
    budget: str = "10m"  # the whole compile in minutes ("10m": answers + training) or training steps ("200"), as distill
    r: int = _D.r
    alpha: float = _D.alpha
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    lr: float = _D.lr
    clip: float = _D.clip  # gradient-norm clipping (0: off)
    warmup: int = _D.warmup  # steps of linear lr warm-up
    decay: float = _D.decay  # cosine decay over the budget down to this share of lr (1: constant lr)
    batch: int = _D.batch
    answer_tokens: int = _D.answer_tokens
    teacher_batch: int = _D.teacher_batch
    prompts: int = _D.prompts  # training prompts to use (0: all)
    chat: bool = _D.chat  # add the wide everyday pool to the manifesto's own situations
    two_turn: int = _D.two_turn  # situations also taught as a second turn, as distill's
    facts: bool = _D.facts  # questions that stop where a clause states a fact, as distill's
    fact_weight: int = _D.fact_weight  # times each fact question is taught per epoch, as distill's
    checkpoint_every: int = _D.checkpoint_every
    heldout: int = _D.heldout  # held-out prompts for the compile report (0: no report)
    control: bool = _D.control  # also train the shuffled-manifesto control (same steps) and report its fidelity
    seed: int = _D.seed

    kind: ClassVar[str] = "retrain"

    def __post_init__(self) -> None:
        if importlib.util.find_spec("trl") is None:  # found, not imported: TRL loads only when a compile runs
            raise CredoError(f"{self.kind} trains with TRL, which is not installed: pip install 'credo[train]'")
        Budget.parse(self.budget)  # a bad budget fails while the settings are read, before any model loads
        if self.r < 1 or self.batch < 1 or self.answer_tokens < 1 or self.teacher_batch < 1 or self.checkpoint_every < 1 or self.fact_weight < 1:
            raise CredoError(f"{self.kind}: r, batch, answer_tokens, teacher_batch, fact_weight and checkpoint_every must be at least 1")
        if not self.lr > 0 or not self.alpha > 0:
            raise CredoError(f"{self.kind}: lr and alpha must be greater than 0")
        if not 0 < self.decay <= 1:
            raise CredoError(f"{self.kind}: decay must be in (0, 1] (the share of lr left at the end of the budget; 1: constant)")
        if self.clip < 0 or self.warmup < 0 or self.heldout < 0 or self.prompts < 0 or self.two_turn < 0:
            raise CredoError(f"{self.kind}: clip, warmup, heldout, prompts and two_turn cannot be negative")


def answers(base: Base, context: str, prompts: list[Prompt], config: RetrainConfig, label: str, progress: bool) -> tuple[list[Answer], float]:
    """Greedy answers of the base with `context` ahead ('': the bare base), and what they cost over all sessions.

    Cached by base, context, length and prompt set alone, so `sft` and `dpo` of one manifesto share them."""
    work = work_dir("retrain-answers", base.sha256, context, str(config.answer_tokens), "\n".join(map(prompt_key, prompts)))
    runner = Runner(base, context, batch=config.teacher_batch)
    team = Team.of(base)
    start = time.perf_counter()
    with team.main_first():  # the other processes read what the main one cached
        out = teacher_answers(runner, prompts, config.answer_tokens, 1, work / "answers.safetensors", progress=label if progress and team.main else "")
    return out, _teacher_seconds(work, time.perf_counter() - start, team)


def prompt_ids(base: Base, prompt: Prompt) -> list[int]:
    """The tokens ahead of an answer, as the student runs them: BOS, then the conversation (see `Runner`)."""
    runner = Runner(base)
    return runner.context_ids + runner.conv(prompt)


def positions(start: int, n: int, seed: int) -> Iterator[int]:
    """Example indices from position `start` of an endless run of epochs, each a fixed shuffle: step s reads positions
    s·batch onwards, so a run resumed at a step sees the same batches as an unbroken one."""
    for epoch in itertools.count(start // n):
        order = list(range(n))
        random.Random(seed * 100003 + epoch).shuffle(order)
        yield from order[start - epoch * n :] if epoch * n < start else order


def shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The model's modules copied and its tensors shared: PEFT can wrap the copy's layers while the base stays as it is."""
    memo: dict[int, Any] = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def lora_parameters(model: torch.nn.Module) -> dict[tuple[str, str], torch.nn.Parameter]:
    """(module path, 'A' or 'B') -> the PEFT model's trainable tensor, module paths in PEFT naming as `LoraWeights`."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad and ".lora_" in name:
            path, part = name.removeprefix("base_model.model.").split(".lora_", 1)
            out[(path, part[0])] = p
    return out


class Session:
    """One TRL run on one compile: its optimizer and schedule, its clock, its checkpoint (resumed if there is one)."""

    def __init__(self, model: torch.nn.Module, config: RetrainConfig, work: Path, budget: Budget, init: LoraWeights, team: Team):
        self.config, self.work, self.budget, self.team = config, work, budget, team
        self.lora = lora_parameters(model)
        if {m for m, _ in self.lora} != set(init.modules):
            raise CredoError(f"{config.kind}: TRL's LoRA targets other modules than credo's ({len(self.lora) // 2} against {len(init.modules)})")
        self.params = [self.lora[k] for k in sorted(self.lora)]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=0.0)
        self.progress = Progress()
        with torch.no_grad():  # distill's initial adapter: A random, B zero, so both start from the same point
            for (m, part), p in self.lora.items():
                p.copy_((init.a if part == "A" else init.b)[m])
        self._resume()
        self.resumed, self.offset, self.session = self.progress.step, self.progress.seconds, time.perf_counter()
        self.agreed = self.progress.seconds  # a team's clock, set at each step's end to the main process's
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.bar: tqdm | None = None

    def _lr_factor(self, k: int) -> float:
        """Distill's schedule, driven by the global step and the time spent (LambdaLR counts steps from this session)."""
        step = self.resumed + k
        seconds = self.seconds() if self.team.size == 1 else self.agreed  # the same on every process, so their lr are too
        return learning_rate(self.config, step, self.budget.fraction(step, seconds)) / self.config.lr  # type: ignore[arg-type]

    def seconds(self) -> float:
        return self.offset + time.perf_counter() - self.session

    def steps_done(self) -> int:
        """Optimizer steps taken, read off the optimizer itself: an interrupt between update and bookkeeping can't skew it."""
        states = [self.opt.state[p] for p in self.params if p in self.opt.state]
        return int(states[0]["step"]) if states else 0

    def _resume(self) -> None:
        found = load_checkpoint(self.work, self.params, self.opt)
        if found is not None:
            self.progress = found[1]

    def save(self) -> None:
        """Write the checkpoint (the main process alone: the others hold the same weights)."""
        if not self.team.main:
            return
        p = self.progress
        p.step, p.seconds = self.steps_done() or p.step, self.seconds()
        save_checkpoint(self.work, self.params, self.opt, p, self.config)

    def weights(self, base: Base) -> LoraWeights:
        a = {m: t.detach().clone().float() for (m, part), t in self.lora.items() if part == "A"}
        b = {m: t.detach().clone().float() for (m, part), t in self.lora.items() if part == "B"}
        return LoraWeights(r=self.config.r, alpha=float(self.config.alpha), a=a, b=b, arch=gguf_arch(base.model), base_model=base.spec,
                           extra=export_facts(base.model))

    def callback(self, label: str, progress: bool) -> Any:
        """The TrainerCallback that keeps the clock, stops TRL when the budget is spent, and checkpoints."""
        from transformers import TrainerCallback

        run = self

        class Clock(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                run.bar = tqdm(total=run.budget.steps, initial=run.progress.step, desc=label, disable=not progress or not run.team.main,
                               leave=False, unit="step")

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                run.agreed = run.team.agree(run.seconds())
                run.progress.step, run.progress.seconds = run.steps_done(), run.agreed
                if run.budget.spent(run.progress.step, run.progress.seconds):
                    control.should_training_stop = True

            def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
                if not logs or "loss" not in logs:
                    return
                run.progress.losses.append(round(float(logs["loss"]), 5))
                if run.bar is not None:
                    run.bar.update(1)
                    run.bar.set_postfix(loss=f"{logs['loss']:.3f}", min=f"{run.progress.seconds / 60:.1f}")
                if run.progress.step % run.config.checkpoint_every == 0:
                    run.save()

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if run.bar is not None:
                    run.bar.close()

        return Clock()


def per_process_batch(config: RetrainConfig, processes: int) -> int:
    """Each process's share of the step's `batch`: TRL gives every process the same number of rows."""
    if config.batch % processes:
        raise CredoError(f"{config.kind}: batch {config.batch} does not split evenly over {processes} processes; give a multiple of {processes}")
    return config.batch // processes


def trl_arguments(config: RetrainConfig, base: Base, work: Path, max_steps: int, progress: bool, processes: int = 1) -> dict[str, Any]:
    """TrainingArguments both TRL configs take: credo's batch (split over `processes`), clipping and seed; no TRL
    checkpoints, logs or hub."""
    mixed = of(base).reduced  # credo.runtime.precision's choice, as distill trains: bf16 autocast only where it measured faster
    return dict(
        output_dir=str(work / "trl"),
        max_steps=max_steps,
        per_device_train_batch_size=per_process_batch(config, processes),  # the step's batch stays `batch` however many processes share it
        gradient_accumulation_steps=1,
        learning_rate=config.lr,
        weight_decay=0.0,
        max_grad_norm=config.clip,
        seed=config.seed,
        bf16=mixed,
        fp16=False,
        use_cpu=base.device.type == "cpu",
        activation_checkpointing=False,  # a 270M model's activations fit; recomputing them costs a fifth more time
        train_sampling_strategy="sequential",  # the order is credo's (`positions`), so that resuming replays it
        save_strategy="no",  # credo checkpoints in safetensors itself
        logging_strategy="steps",
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        max_length=None,
        ddp_find_unused_parameters=False,  # every LoRA tensor takes part in each step; True costs a graph walk per step
    )


class RetrainLayer(LoraLayer):
    """A LoRA retrained by a TRL trainer on the teacher's answers. Subclasses give `rows` and `trainer`."""

    Config: ClassVar[type] = RetrainConfig
    demo_settings = {"budget": "5m", "heldout": "0", "control": "false"}
    uses_base_answers: ClassVar[bool] = False  # whether `rows` needs the bare base's answers too
    baseline: ClassVar[bool] = True  # what credo is measured against, not an identity compiler: `credo demo` skips it unless asked

    @classmethod
    def rows(cls, prompt: list[int], teacher: Answer, base: Answer | None) -> dict[str, list[int]] | None:
        """One training example in the TRL trainer's pre-tokenised format, or None to leave the prompt out."""
        raise NotImplementedError

    @classmethod
    def trainer(cls, model: torch.nn.Module, config: RetrainConfig, arguments: dict[str, Any], data: Any, tokenizer: Any, peft: Any) -> Any:
        """The TRL trainer over `model` (PEFT wraps it from `peft`), with `arguments` for its TrainingArguments."""
        raise NotImplementedError

    @classmethod
    def retrain(cls, manifesto: Manifesto, base: Base, config: RetrainConfig, budget: Budget, label: str | None = None,
                progress: bool = True) -> tuple[LoraWeights, Progress, dict[str, Any]]:
        """Answers (cached), then TRL training (resumable) until the budget is spent."""
        label = label or cls.kind
        per_process_batch(config, Team.of(base).size)  # a batch the processes cannot share fails before any work
        prompts = training_prompts(manifesto, config.prompts, config.chat, config.two_turn, config.facts)
        if not prompts:
            raise CredoError(f"{cls.kind}: the manifesto yields no training prompts; add clauses or examples")
        context = manifesto_context(manifesto, base)
        teacher, seconds = answers(base, context, prompts, config, f"{label}: teacher answers", progress)
        bare: list[Answer | None] = [None] * len(prompts)
        if cls.uses_base_answers:
            found, spent = answers(base, "", prompts, config, f"{label}: base answers", progress)
            bare, seconds = list(found), seconds + spent
        made = {i: row for i, (p, t, b) in enumerate(zip(prompts, teacher, bare)) if (row := cls.rows(prompt_ids(base, p), t, b)) is not None}
        examples = [made[i] for i in taught(manifesto, prompts, list(made), config.fact_weight)]
        if not examples:
            raise CredoError(f"{cls.kind}: the teacher and the bare base answer every training prompt alike; there is nothing to learn")
        asked = budget
        if budget.minutes is not None:  # a budget in minutes covers the whole compile: training gets what the answers left
            budget = Budget(minutes=max(budget.minutes - seconds / 60, 1e-3))
        untied = ("budget", "heldout", "control", "checkpoint_every", "teacher_batch")  # settings that do not change what is learnt
        key = json.dumps({k: v for k, v in asdict(config).items() if k not in untied} | {"precision": of(base).name}, sort_keys=True)
        work = work_dir(cls.kind, base.sha256, context, label, key, "\n".join(map(prompt_key, prompts)))
        weights, p, stopped = cls._train(base, config, work, examples, budget, label, progress)
        figures = {
            "train_prompts": len(prompts),
            "train_examples": len(examples),
            "answer_seconds": round(seconds, 1),
            "steps": p.step,
            "resumed_from_step": stopped["resumed"],
            "train_seconds": round(p.seconds, 1),
            "loss_first": p.losses[0] if p.losses else None,
            "loss_last": p.losses[-1] if p.losses else None,
            "stopped": f"budget spent ({asked})" if stopped["spent"] else "trainer finished",
            "work": str(work),
        }
        return weights, p, figures

    @classmethod
    def _train(cls, base: Base, config: RetrainConfig, work: Path, examples: list[dict[str, list[int]]], budget: Budget, label: str,
               progress: bool) -> tuple[LoraWeights, Progress, dict[str, Any]]:
        from datasets import IterableDataset
        from peft import LoraConfig
        from transformers import PrinterCallback

        team = Team.of(base)
        init = LoraWeights.init(base.model, r=config.r, alpha=config.alpha, targets=tuple(config.targets), seed=config.seed)
        peft = LoraConfig(r=config.r, lora_alpha=config.alpha, target_modules=list(config.targets), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
        done = _checkpoint_step(work)
        steps = budget.steps - done if budget.steps is not None else 1 << 30  # a time budget ends by the clock, not by a count
        start = done * config.batch

        def stream() -> Iterator[dict[str, list[int]]]:
            for i in positions(start, len(examples), config.seed):
                yield examples[i]

        with frozen(base.model), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' renamed settings, which TRL still reads by their old names
            model = shared_copy(base.model)
            trainer = cls.trainer(model, config, trl_arguments(config, base, work, max(steps, 1), progress, team.size),
                                  IterableDataset.from_generator(stream), base.tokenizer, peft)
            run = Session(trainer.model, config, work, budget, init, team)
            trainer.optimizer, trainer.lr_scheduler = run.opt, run.schedule
            trainer.add_callback(run.callback(label, progress))
            trainer.remove_callback(PrinterCallback)  # credo's bar shows the loss; TRL would print every step's log dict
            resumed = run.progress.step
            if not budget.spent(run.progress.step, run.progress.seconds):
                try:
                    trainer.train()
                except KeyboardInterrupt:
                    run.save()  # Ctrl-C keeps the steps done since the last checkpoint: the next run resumes from there
                    raise
            run.save()
            weights = run.weights(base)
        return weights, run.progress, {"resumed": resumed, "spent": budget.spent(run.progress.step, run.progress.seconds)}

    # --- the layer --------------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: RetrainConfig | None, info: LayerInfo) -> RetrainLayer:
        config = config or cls.Config()
        budget = Budget.parse(config.budget)
        weights, progress, figures = cls.retrain(manifesto, base, config, budget)
        layer = cls(info, manifesto, weights)

        def control_weights(steps: Budget) -> LoraWeights:
            return cls.retrain(manifesto.shuffled(0), base, config, steps, label="control")[0]

        report_trained(layer, base, config, progress, figures, control_weights)
        return layer


def _checkpoint_step(work: Path) -> int:
    st = work / STATE
    return int(json.loads(st.read_text())["progress"]["step"]) if st.is_file() and (work / CHECKPOINT).is_file() else 0
