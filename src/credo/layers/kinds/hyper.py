"""`hyper`: the manifesto to a LoRA with no per-manifesto gradient training, in seconds rather than minutes (the aim
is 10 s on 2 CPU cores; docs/tuning.md has the times measured).

Method `closed-form` (the default; see `credo.hyper.closed_form`): the teacher (the base with the manifesto in context)
answers the manifesto's train probes (plus 16 everyday prompts of `credo.chat_pool`, 16 probes again as the second turn
of a conversation, and questions that stop where a clause states a fact: `credo.probes`) greedily in one batch, and its
module outputs are recorded on the way (`credo.hyper.recorded`); the student (the bare base) is then teacher-forced over
the same prompts and answers, and every target linear module (by default each layer's attention output projection, where
the manifesto's effect enters) gets the ridge-regression patch that moves the student's outputs onto the teacher's,
solved in forward order and truncated by SVD to rank r; each attention patch is also asked to close a share (`gap`) of
the residual-stream gap that the layers before it left. No gradients: one generation, one forward pass and a few small
solves. Each solve also holds the patch still on generic text (MEMIT's covariance term): the base's own input moments
over text it wrote once (`credo.hyper.keep_stats`, about a minute the first time on a new base, read from disk after).
The payload is the shared LoRA format (PEFT, llama.cpp GGUF), served like `distill`.

At compile time the layer also takes a quick look at itself: first-token fidelity (KL at the answer's first token,
teacher vs layer vs base) over the held-out probes and per clause, and, when the output folder held an earlier `hyper`
compile, which clauses changed and how their figures moved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from credo.errors import CredoError
from credo.hyper import closed_form, recorded
from credo.hyper.base_states import base_first_states
from credo.hyper.batch import make_batch, pack_batch
from credo.hyper.diff import clause_changes, previous_folder_of, read_previous
from credo.hyper.keep_stats import keep_moments
from credo.hyper.texts import answers_for
from credo.layers.layer import LayerInfo
from credo.layers.lora import LoraLayer, LoraWeights, export_facts, gguf_arch, lora_hooks
from credo.layers.registry import register
from credo.manifesto import manifesto_context
from credo.probes import probes as all_probes
from credo.probes import second_turns, spread
from credo.runtime.fidelity import fidelity_from_kl, kl_each
from credo.runtime.precision import compute

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto

METHODS = ("closed-form",)
ANSWERS = ("none", "examples", "bank", "mixed", "teacher")


@dataclass
class HyperConfig:
    method: str = "closed-form"
    rank: int = 128  # higher follows the manifesto closer for a little more drift on neutral text; 64-128
    targets: list[str] = field(default_factory=lambda: ["o_proj"])  # o_proj alone: the context enters there; down_proj overfits
    layers: list[int] = field(default_factory=list)  # decoder layers to patch; empty: all (no subset tried did better)
    answers: str = "teacher"  # keep teacher: fitting the teacher's own greedy answers beats none, examples, bank and mixed
    answer_tokens: int = 24  # teacher answer length fitted on; longer gained nothing
    probes: int = 0  # train probes to fit on (0: all); fewer compile faster and follow the manifesto less closely
    chat: bool = False  # True fits the whole everyday pool: a little less drift at about 3.5x the compile time
    chat_probes: int = 16  # everyday prompts added when chat is off; 16 gives most of 32's gain for about 15% more time
    two_turn: int = 16  # train probes also fitted as a second turn after an earlier exchange; 32 gained nothing more
    facts: bool = True  # keep True: also fit questions that stop where a clause states a price, time or name
    fact_weight: float = 4.0  # times a fact question's rows count in the solve; 4 keeps more facts, 16 costs voice
    gap: float = 0.5  # share of the residual-stream gap earlier layers left that each attention patch also closes; 0.5-1
    ridge: float = 0.05  # times the mean eigenvalue; lower follows the teacher closer and moves neutral text more; 0.02-0.2
    keep: float = 1.0  # weight of generic text the patch must not move; 2-4 drifts less and follows less
    strength: float = 1.0  # lora_alpha = strength * rank; below 1 trades fidelity for drift, as keep does
    teacher_examples: bool = True  # keep True: a teacher that cannot copy the example exchanges gives a far weaker patch
    report: bool = True  # first-token fidelity per clause and vs the previous compile
    previous: str = ""  # layer folder to diff against (default: the folder this compile replaces)

    def __post_init__(self) -> None:
        _validate(self)  # so `credo compile --set` fails on a bad value before the model loads


@register
class HyperLayer(LoraLayer):
    kind = "hyper"
    order = 50
    Config = HyperConfig

    @classmethod
    def build(cls, manifesto: Manifesto, base: Base, config: HyperConfig | None, info: LayerInfo) -> HyperLayer:
        config = config or HyperConfig()
        _validate(config)
        torch.manual_seed(0)  # nothing here is random; this only pins any library default that might be
        weights, figures = fit(manifesto, base, config)
        info.report.update(figures)
        cls.describe(weights, info)
        info.params["context_tokens_at_run_time"] = 0
        layer = cls(info, manifesto, weights)
        if config.previous:
            layer.diff_against(Path(config.previous))
        return layer

    def save_payload(self, folder: Path) -> None:
        if self.info.params.get("report", True) and not self.info.params.get("previous") and "changes" not in self.info.report:
            self.diff_against(previous_folder_of(folder))
        super().save_payload(folder)

    def diff_against(self, folder: Path) -> None:
        """Set `report.changes`: clause by clause, what changed since the hyper layer in `folder` (if there is one)."""
        prev = read_previous(folder) if folder.is_dir() else None
        if prev is not None:
            self.info.report["changes"] = clause_changes(prev[0], prev[1], self.manifesto, self.info.report)


def _validate(c: HyperConfig) -> None:
    if c.method not in METHODS:
        raise CredoError(f"hyper: unknown method {c.method!r}; known: {', '.join(METHODS)}")
    if c.answers not in ANSWERS:
        raise CredoError(f"hyper: answers must be one of {', '.join(ANSWERS)}, not {c.answers!r}")
    if c.rank < 1 or c.probes < 0 or c.chat_probes < 0 or c.two_turn < 0 or c.answer_tokens < 0 or c.ridge <= 0 or c.keep < 0 or c.fact_weight <= 0:
        raise CredoError("hyper: rank must be >= 1, probes, chat_probes, two_turn and answer_tokens >= 0, ridge, fact_weight > 0 and keep >= 0")
    if not 0 <= c.gap <= 1:
        raise CredoError(f"hyper: gap must be between 0 and 1, not {c.gap}")
    if c.answers == "teacher" and c.answer_tokens < 1:
        raise CredoError("hyper: answers=teacher needs answer_tokens >= 1 (or answers=none for no continuation)")
    if not c.targets:
        raise CredoError("hyper: targets must name at least one linear module (e.g. o_proj,down_proj)")


def fit(manifesto: Manifesto, base: Base, c: HyperConfig) -> tuple[LoraWeights, dict]:
    """The closed-form fit plus its quick look, in the precision `credo.runtime.precision` chose (the solves stay
    float32 either way); returns the adapter and the figures for `info.report`."""
    with compute(base):
        return _fit(manifesto, base, c)


def _fit(manifesto: Manifesto, base: Base, c: HyperConfig) -> tuple[LoraWeights, dict]:
    model = base.model
    modules = closed_form.target_modules(model, c.targets, c.layers or None)
    if not modules:
        raise CredoError(f"hyper: the model has no linear modules named {', '.join(c.targets)} in the chosen layers")
    rank = min(c.rank, *(min(m.in_features, m.out_features) for m in modules.values()))  # a module's full rank caps it
    streams = closed_form.streams_for(model, modules) if c.gap > 0 else {}
    entries = {st.key: st.entry for st in streams.values()}
    bos, pad = _bos_pad(base)
    ps = all_probes(manifesto, chat=c.chat or c.chat_probes > 0, facts=c.facts)
    train = [p for p in ps if not p.heldout and p.origin != "chat"]
    train = train[: c.probes] if c.probes else train
    train += second_turns(manifesto, [p for p in train if p.origin != "example"], c.two_turn)
    train += spread([p for p in ps if not p.heldout and p.origin == "chat"], None if c.chat else c.chat_probes)
    look_only = [p for p in ps if p.heldout and p.origin != "chat"] if c.report else []  # the pool adds rows, not clauses
    shown = manifesto if c.teacher_examples else dataclasses.replace(manifesto, examples=())
    context_text = manifesto_context(shown, base)
    context = base.encode(context_text, bos=True)
    convs = [base.chat_ids(p.messages) for p in train + look_only]
    held_order = sorted(range(len(train), len(convs)), key=lambda i: len(convs[i]))  # short rows together: less padding
    look_only = [look_only[i - len(train)] for i in held_order]
    convs = convs[: len(train)] + [convs[i] for i in held_order]
    n_train = len(train)
    if c.answers == "teacher":  # the teacher answers and records its module outputs on the way: no teacher pass
        # the look-only rows get their first token in a batch of their own after the train rows (one 82-row prefill was
        # slower than the two apart): no teacher pass of its own
        rec = recorded.generate_recording(base, modules, context_text, [p.messages for p in train], c.answer_tokens,
                                          batch=min(max(len(train), 1), 128), look=[p.messages for p in look_only],
                                          inputs=entries)
        tails = [a[: len(a) - 1] for a in rec.answers]  # the last answer token is never fed back: it has no outputs
        targets, teacher_first, teacher_look = rec.outputs, rec.first_final, rec.look_final
    else:
        texts = answers_for(manifesto, c.answers, n_train)
        tails = [base.encode(" " + t.strip())[: c.answer_tokens] if t.strip() else [] for t in texts]
        t_batch = make_batch([q + t for q, t in zip(convs, tails)], [len(q) - 1 for q in convs[:n_train]], pad)
        targets, teacher_first = closed_form.record_outputs(base, modules, t_batch, context,
                                                            look=torch.tensor([len(q) - 1 for q in convs[:n_train]]), inputs=entries)
        teacher_look = None
    # every row fits len(tail) + 1 positions: the prompt's last token, then each tail token. The student pass is one
    # batch (every row must reach module m before m is solved) of rows packed with several sequences each; the
    # teacher's rows are put in the order the packing reads them
    starts = [len(bos) + len(convs[i]) - 1 for i in range(n_train)]
    s_batch, order, where = pack_batch([bos + convs[i] + tails[i] for i in range(n_train)], starts, pad)
    bounds = [0] + torch.tensor([len(t) + 1 for t in tails]).cumsum(0).tolist()
    targets = {name: torch.cat([t[bounds[i] : bounds[i + 1]] for i in order]) for name, t in targets.items()}
    moments = keep_moments(base, modules) if c.keep > 0 else None
    last = torch.tensor([[where[i][0] for i in order], [where[i][1] + starts[i] for i in order]])
    weights = None
    if c.fact_weight != 1.0 and any(p.fact for p in train):
        weights = torch.cat([torch.full((len(tails[i]) + 1,), c.fact_weight if train[i].fact else 1.0) for i in order])
    result, layer_first = closed_form.fit_sequential(base, modules, targets, s_batch, moments, rank, c.ridge, c.keep,
                                                     look=last if c.report else None, weights=weights, streams=streams, gap=c.gap)
    a, b = result.A, result.B
    if c.strength != 1.0:
        b = {k: v * c.strength for k, v in b.items()}  # folded into B so lora_alpha stays = rank (scale 1), as llama.cpp reads it
    weights = LoraWeights(r=rank, alpha=float(rank), a=a, b=b, arch=gguf_arch(model), base_model=base.name,
                          extra=export_facts(model))
    figures: dict = {
        "method": c.method,
        "train_probes": n_train,
        "fit_rows": int(s_batch.rows),
        "residual_explained": round(sum(result.explained.values()) / len(result.explained), 4),
        "context_tokens_saved": len(context) - len(bos),
    }
    if c.report:
        figures["quick_look"] = "first answer token only; it can miss harm at later tokens: run `credo eval` for fidelity"
        figures.update(_quick_look(base, manifesto, weights, context, [train[i] for i in order] + look_only,
                                   [convs[i] for i in order] + convs[n_train:], teacher_first[order], layer_first, teacher_look))
    return weights, figures


def _quick_look(base: Base, manifesto: Manifesto, weights: LoraWeights, context: list[int], ps: list, convs: list[list[int]],
                teacher_train: torch.Tensor, layer_train: torch.Tensor, teacher_held: torch.Tensor | None = None) -> dict:
    """First-answer-token states of the base on every row (cached per base), and of the teacher (unless the generation
    gave them) and the layer on the held-out rows (the train rows' come off the generation and the fit), then the figures."""
    bos, pad = _bos_pad(base)
    n_train = len(teacher_train)
    base_first = base_first_states(base, convs, bos, pad)
    teacher_first, layer_first = teacher_train, layer_train
    if len(convs) > n_train:
        held = convs[n_train:]
        if teacher_held is None:
            _, teacher_held = closed_form.record_outputs(base, {}, make_batch(held, [len(q) for q in held], pad), context,
                                                         look=torch.tensor([len(q) - 1 for q in held]))
        with lora_hooks(base.model, weights):
            layer_held = closed_form.last_states(base, [bos + q for q in held], pad)
        teacher_first, layer_first = torch.cat([teacher_train, teacher_held]), torch.cat([layer_train, layer_held])
    return _first_token_figures(base, manifesto, ps, teacher_first, layer_first, base_first, n_train)


def _bos_pad(base: Base) -> tuple[list[int], int]:
    """The BOS the student's rows start with (none if the tokenizer has none) and the id right padding uses."""
    return base.bos_ids, base.tokenizer.pad_token_id or 0


def _first_token_figures(base: Base, manifesto: Manifesto, ps: list, teacher: torch.Tensor, layer: torch.Tensor, bare: torch.Tensor, n_train: int) -> dict:
    """KL(teacher ‖ row) at the first answer token: overall (train, held-out) and per clause (all of its probes)."""
    # one pass through the 262k-wide head for all three (on CPU a third faster than three passes of a third the rows)
    t_logits, l_logits, b_logits = base.head_logits(torch.cat([teacher, layer, bare])).split([len(teacher), len(layer), len(bare)])
    kl_layer, kl_base = kl_each(t_logits, l_logits, b_logits)

    def fid(idx: list[int]) -> float | None:
        if not idx:
            return None
        return round(fidelity_from_kl(float(kl_layer[idx].sum()), float(kl_base[idx].sum())), 4)

    out = {"first_token_fidelity_train": fid(list(range(n_train))), "first_token_fidelity_heldout": fid(list(range(n_train, len(ps))))}
    out["clause_fidelity"] = {c.id: fid([i for i, p in enumerate(ps) if p.origin == c.id]) for c in manifesto.clauses}
    return out
