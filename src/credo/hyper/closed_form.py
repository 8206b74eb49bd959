"""Closed-form fit: per target linear module, the ridge solution that makes the bare model's module outputs match the
teacher's (the same model with the manifesto in context), truncated by SVD to a rank-r LoRA.

Two passes do the whole fit. The teacher pass records each module's outputs at the fit positions. The student pass
then solves each module inside its own forward hook, in the order the forward visits them, and returns the patched
output, so every later module is fitted on inputs that already carry the earlier patches (a sequential, layer-by-layer
fit at the cost of one forward pass). The second moments of each module's inputs on generic text (`keep_stats`, cached
per base) enter each solve as a zero-residual term: that is MEMIT's covariance term, which keeps the patch from moving
the model where the manifesto has nothing to say.

An attention-output patch is also asked to close part of the residual-stream gap the earlier layers left (`Stream`):
its target is the teacher's output plus the teacher's residual stream entering the layer minus the patched student's,
mapped back through the norm some families put on the attention output. Matching each module's own output leaves the
drift of everything unpatched in between (the MLPs, what a rank-r patch cannot say) to pile up layer after layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from credo.families import family_of
from credo.hyper.batch import Batch, chunk_width, pack_batch, prefill, run_body

if TYPE_CHECKING:
    from credo.base import Base


@dataclass
class Fit:
    """Per module name (PEFT-style, e.g. `model.layers.3.self_attn.o_proj`): A (r, in) and B (out, r), plus figures."""

    A: dict[str, torch.Tensor] = field(default_factory=dict)
    B: dict[str, torch.Tensor] = field(default_factory=dict)
    explained: dict[str, float] = field(default_factory=dict)  # share of the residual the rank-r patch removes


GAIN_FLOOR = 0.1  # a norm gain this small (times the median gain) is inverted no further: the patch cannot push through it


@dataclass
class Stream:
    """How an attention-output module's patch reaches the residual stream: `entry` is the layer's input norm, whose input
    is the residual stream entering the layer (recorded under `key`); `gain` the per-channel gain of the norm on the
    module's output before the residual add (None: the output is added as it is)."""

    key: str
    entry: torch.nn.Module
    gain: torch.Tensor | None

    def to_output(self, gap: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
        """A residual-stream gap (N, d) as a change of the module's output: through the inverse of the norm's gain
        (floored), at the scale of the teacher's output, whose norm divides it out."""
        if self.gain is None:
            return gap
        g = self.gain
        floor = GAIN_FLOOR * float(g.abs().median())
        scale = teacher_out.float().pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        return gap * (g / (g * g + floor * floor)) * scale


def streams_for(model: torch.nn.Module, modules: dict[str, torch.nn.Linear]) -> dict[str, Stream]:
    """The `Stream` of every target that writes the attention output, for a family whose layout is known
    (`credo.families`); an unknown family gets none, and its patches match each module's own output."""
    family = family_of(getattr(model.config, "model_type", ""))
    if family is None:
        return {}
    out: dict[str, Stream] = {}
    for name in modules:
        parts = name.split(".")
        if parts[-1] != family.attention[-1] or parts[:2] != ["model", "layers"]:
            continue
        layer = model.model.layers[int(parts[2])]
        gain = None
        if family.attention_out_norm:
            norm = getattr(layer, family.attention_out_norm)
            with torch.no_grad(), torch.autocast(norm.weight.device.type, enabled=False):
                gain = norm(torch.ones(1, norm.weight.shape[0], device=norm.weight.device, dtype=norm.weight.dtype)).float()[0]
        out[name] = Stream(f"model.layers.{parts[2]}.{family.input_norm}", getattr(layer, family.input_norm), gain)
    return out


def target_modules(model: torch.nn.Module, kinds: list[str], layers: list[int] | None) -> dict[str, torch.nn.Linear]:
    """The linear modules to patch, in forward order, by leaf name (o_proj, down_proj, ...) and decoder layer index."""
    out: dict[str, torch.nn.Linear] = {}
    n = len(model.model.layers)
    chosen = range(n) if not layers else [i if i >= 0 else n + i for i in layers]
    for i in sorted(set(chosen)):
        for name, mod in model.model.layers[i].named_modules():
            if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in kinds:
                out[f"model.layers.{i}.{name}"] = mod
    return out


def record_outputs(
    base: Base, modules: dict[str, torch.nn.Linear], batch: Batch, prefix: list[int], look: torch.Tensor | None = None, chunk: int = 16,
    inputs: dict[str, torch.nn.Module] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The teacher pass: each module's outputs at the fit positions, with `prefix` (the manifesto) ahead, and what
    enters each of `inputs` (under its key).

    `look` (B,) picks one position per row whose final hidden state is also returned (for first-token figures).
    """
    entering = inputs or {}
    got: dict[str, list[torch.Tensor]] = {name: [] for name in [*modules, *entering]}
    finals: list[torch.Tensor] = []
    masks = [m[:, : chunk_width(batch.lengths, lo, chunk)] for lo, m in zip(range(0, len(batch.lengths), chunk), batch.fit.split(chunk))]
    looks = list(look.split(chunk)) if look is not None else []

    def keep(name: str, out: torch.Tensor) -> None:
        got[name].append(out.detach()[masks[len(got[name])]])

    cache = prefill(base, prefix)
    handles = [mod.register_forward_hook(lambda m, i, o, name=name: keep(name, o)) for name, mod in modules.items()]
    handles += [mod.register_forward_pre_hook(lambda m, i, name=name: keep(name, i[0])) for name, mod in entering.items()]
    if look is not None:
        handles.append(base.model.model.norm.register_forward_hook(lambda m, i, o: finals.append(_at(o, looks[len(finals)]))))
    try:
        run_body(base, batch.ids, cache, chunk=chunk, lengths=batch.lengths)
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(outs) for name, outs in got.items()}, (torch.cat(finals) if finals else None)


def final_states(base: Base, batch: Batch, look: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """The final hidden state at one position per row, of the model as its active hooks make it (bare, or with an adapter)."""
    finals: list[torch.Tensor] = []
    looks = list(look.split(chunk))
    handle = base.model.model.norm.register_forward_hook(lambda m, i, o: finals.append(_at(o, looks[len(finals)])))
    try:
        run_body(base, batch.ids, None, chunk=chunk, lengths=batch.lengths)
    finally:
        handle.remove()
    return torch.cat(finals)


def last_states(base: Base, seqs: list[list[int]], pad: int) -> torch.Tensor:
    """The final hidden state at each sequence's last token, as the active hooks make the model, with the sequences
    packed into rows (`pack_batch`) and run as one batch: 92 quick-look rows padded in chunks of 16 ran at about
    830 tokens/s, against about 1190 for one wide batch."""
    batch, _, where = pack_batch(seqs, [len(s) - 1 for s in seqs], pad)
    look = torch.tensor([[r for r, _ in where], [c + len(s) - 1 for (_, c), s in zip(where, seqs)]])
    finals: list[torch.Tensor] = []
    handle = base.model.model.norm.register_forward_hook(lambda m, i, o: finals.append(_at(o, look)))
    try:
        run_body(base, batch.ids, None, chunk=batch.ids.shape[0], positions=batch.positions)
    finally:
        handle.remove()
    return finals[0]


def _at(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """One position per row (B,), or (2, N) rows and columns (packed rows hold several sequences)."""
    if positions.dim() == 2:
        return hidden[positions[0], positions[1]].detach()
    return hidden[torch.arange(hidden.shape[0]), positions].detach()


def _solve(x: torch.Tensor, r: torch.Tensor, moment: torch.Tensor | None, ridge: float, keep: float, rank: int,
           weights: torch.Tensor | None = None):
    """min ||X D^T - R||^2/N + keep * tr(D C D^T) + lam ||D||^2, lam = ridge * tr(G)/d, then the best rank-r D = B @ A.

    C is the module's input second moment on generic text (the keep term) and G = X^T X/N + keep * C, the whole
    normal matrix, so `ridge` is relative to the inputs' scale. The solve runs in input space (d x d: 1024 for o_proj)
    by Cholesky; the rank-r factors come from an eigendecomposition of D D^T (out x out), not a full SVD. `weights`
    (N,), if given, weigh the rows (the squared error of row i counts w_i times; N is then their sum).
    """
    with torch.autocast(x.device.type, enabled=False):  # the passes may run in bfloat16; the solve never does
        return _solve_fp32(x.float(), r.float(), moment, ridge, keep, rank, weights)


def _solve_fp32(x: torch.Tensor, r: torch.Tensor, moment: torch.Tensor | None, ridge: float, keep: float, rank: int,
                weights: torch.Tensor | None = None):
    n, d = x.shape
    xw = x if weights is None else x * weights.to(x)[:, None]
    n = n if weights is None else float(weights.sum())
    gram = xw.T @ x / n
    if moment is not None and keep > 0:
        gram.add_(moment.to(gram.device), alpha=keep)
    lam = ridge * float(torch.trace(gram)) / d + 1e-8
    delta_t = _spd_solve(gram, lam, xw.T @ r / n)  # (in, out)
    evals, evecs = torch.linalg.eigh(delta_t.T @ delta_t)  # D D^T, ascending
    k = min(rank, len(evals))
    s = evals[-k:].flip(0).clamp_min(1e-20).sqrt()
    u = evecs[:, -k:].flip(1)  # (out, k)
    v = delta_t @ u / s  # (in, k)
    root = s.sqrt()
    b = (u * root).contiguous()
    a = (v * root).T.contiguous()
    fitted = x @ a.T @ b.T
    explained = 1.0 - float(((r - fitted) ** 2).sum() / (r**2).sum().clamp_min(1e-12))
    return a, b, explained


def _spd_solve(m: torch.Tensor, lam: float, rhs: torch.Tensor) -> torch.Tensor:
    """(m + lam I)^-1 rhs for a Gram matrix m: Cholesky, half the cost of a general solve (LU only if it fails)."""
    m = m.clone()
    m.diagonal().add_(lam)
    chol, info = torch.linalg.cholesky_ex(m)
    return torch.cholesky_solve(rhs, chol) if int(info) == 0 else torch.linalg.solve(m, rhs)


def fit_sequential(
    base: Base,
    modules: dict[str, torch.nn.Linear],
    targets: dict[str, torch.Tensor],
    batch: Batch,
    moments: dict[str, torch.Tensor] | None,
    rank: int,
    ridge: float,
    keep: float,
    look: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    streams: dict[str, Stream] | None = None,
    gap: float = 0.0,
) -> tuple[Fit, torch.Tensor | None]:
    """The student pass: solve each module in its hook, patch its output, and let the forward carry on. `weights`
    weigh the fit positions (in the order of `targets`), as `_solve` reads them. A module with a `Stream` (its teacher
    side recorded in `targets` under the stream's key) is also asked to close `gap` of the residual-stream gap."""
    fit = Fit()
    streams = streams if gap > 0 else None
    entering: dict[str, torch.Tensor] = {}  # the patched student's residual stream entering a layer, at the fit positions

    def hook(mod: torch.nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, name: str) -> torch.Tensor:
        x_all = inputs[0]
        x = x_all[batch.fit]
        target = targets[name]
        if streams and name in streams:
            st = streams[name]
            target = target + gap * st.to_output(targets[st.key].float() - entering.pop(st.key).float(), target).to(target.dtype)
        residual = target - output[batch.fit]
        a, b, explained = _solve(x, residual, moments.get(name) if moments else None, ridge, keep, rank, weights)
        fit.A[name], fit.B[name], fit.explained[name] = a, b, round(explained, 4)
        return output + (x_all @ a.T) @ b.T

    finals: list[torch.Tensor] = []
    handles = [mod.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)) for name, mod in modules.items()]
    for st in (streams or {}).values():
        handles.append(st.entry.register_forward_pre_hook(lambda m, i, key=st.key: entering.__setitem__(key, i[0][batch.fit].detach())))
    if look is not None:
        handles.append(base.model.model.norm.register_forward_hook(lambda m, i, o: finals.append(_at(o, look))))
    try:
        run_body(base, batch.ids, None, chunk=batch.ids.shape[0], positions=batch.positions)
    finally:
        for h in handles:
            h.remove()
    return fit, (finals[0] if finals else None)
