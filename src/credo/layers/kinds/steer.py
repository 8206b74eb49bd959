"""`steer`: activation steering read off the manifesto, with no gradient training.

The vector for decoder layer l is the mean difference of that layer's output (the residual stream) between the teacher
(manifesto in context) and a contrast run (no context by default, or a neutral one), over the conversation tokens of
generated training prompts. Which layer, and how strongly, is chosen by the KL to the teacher's own answers on
calibration prompts (training prompts kept apart from those the vector is read on). Held-out prompts are only used for
the compile report.

Payload: a `ControlVector` (credo.layers.control), saved as `steer.safetensors` (one unscaled vector per chosen layer)
and `control.gguf`, the same vectors as a llama.cpp control vector (`direction.N` is added to the output of block N, as
llama.cpp does); `params.strength` is the multiplier to load it with (`--control-vector-scaled control.gguf:STRENGTH`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from credo.errors import CredoError, LayerError
from credo.layers.control import ControlVector
from credo.layers.layer import Layer, LayerInfo
from credo.layers.lora import gguf_arch
from credo.layers.registry import register
from credo.manifesto import Manifesto, manifesto_context
from credo.probes import split
from credo.runtime.teacher import Answer, Hooks, Runner, chain, compile_report, layer_hooks, lower_tag, mean_topk_kl, teacher_answers, work_dir

if TYPE_CHECKING:
    from credo.base import Base
    from credo.manifesto import Manifesto

VECTORS_FILE = ControlVector.SAFETENSORS_FILE
CONTROL_GGUF = ControlVector.GGUF_FILE
NEUTRAL = "# Assistant\n\n- Answer the user's message.\n"
CONTRASTS = ("bare", "neutral")


@dataclass
class SteerConfig:
    layers: list[int] = field(default_factory=list)  # candidates; empty: every second one from n-2 down to n/2 (early layers barely steer)
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0])
    contrast: str = "neutral"  # neutral (a one-line manifesto) cancels the pull of merely having a context; bare does not
    read: str = "answer"  # where differences are read: answer (the teacher's answer tokens, teacher-forced) or prompt
    ladder: bool = False  # also try every layer at once, each adding its own increment; it lost to the best single layer where tried
    prompts: int = 16  # training prompts the vectors are read on
    calibrate: int = 6  # training prompts (apart from those) that choose layer and strength
    answer_tokens: int = 10  # teacher answer length on calibration prompts
    heldout: int = 12  # held-out prompts for the compile report (0: no report)
    control: bool = True  # also compile the shuffled-manifesto control and report its fidelity
    batch: int = 8


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("model.layers", "model.language_model.layers", "transformer.h"):
        with contextlib.suppress(AttributeError):
            return model.get_submodule(path)
    raise LayerError("cannot find the decoder layers of this model to steer")


@contextlib.contextmanager
def steering(model: torch.nn.Module, vectors: dict[int, torch.Tensor], strength: float) -> Iterator[None]:
    """Add strength·v_l to the output of decoder layer l at every position (as llama.cpp applies a control vector)."""
    blocks = decoder_layers(model)
    handles = []

    def make(vec: torch.Tensor):
        def hook(mod: torch.nn.Module, args: tuple, out: Any) -> Any:
            if isinstance(out, tuple):
                return (out[0] + strength * vec.to(out[0].dtype),) + tuple(out[1:])
            return out + strength * vec.to(out.dtype)

        return hook

    try:
        for layer, vec in vectors.items():
            handles.append(blocks[layer].register_forward_hook(make(vec)))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def read_differences(teacher: Runner, contrast: Runner, prompts: Sequence[str], layers: Sequence[int],
                     answers: Sequence[list[int]] | None = None) -> dict[int, torch.Tensor]:
    """Mean over prompts of (teacher − contrast) at each layer's output, averaged over the tokens where the answer is
    made (the prompt's last token and the teacher's answer, teacher-forced through both), or over the whole prompt
    when no answers are given."""
    blocks = decoder_layers(teacher.base.model)
    sums = {li: torch.zeros(teacher.base.model.config.hidden_size) for li in layers}
    count = 0
    for i in range(0, len(prompts), teacher.batch):
        convs = [teacher.conv(p) for p in prompts[i : i + teacher.batch]]
        if answers is not None:
            ans = answers[i : i + teacher.batch]
            seqs = [c + list(a[:-1]) for c, a in zip(convs, ans)]
            spans = [(len(c) - 1, len(c) - 1 + len(a)) for c, a in zip(convs, ans)]
        else:
            seqs, spans = convs, [(0, len(c)) for c in convs]
        got: dict[str, dict[int, torch.Tensor]] = {"t": {}, "c": {}}
        for side, runner in (("t", teacher), ("c", contrast)):
            handles = [blocks[li].register_forward_hook(_grab(got[side], li)) for li in layers]
            try:
                runner.forward(seqs)
            finally:
                for h in handles:
                    h.remove()
        for r, (a, b) in enumerate(spans):
            for li in layers:
                sums[li] += (got["t"][li][r, a:b] - got["c"][li][r, a:b]).float().mean(0)
            count += 1
    return {li: s / max(count, 1) for li, s in sums.items()}


def _grab(store: dict[int, torch.Tensor], layer: int):
    def hook(mod: torch.nn.Module, args: tuple, out: Any) -> None:
        store[layer] = (out[0] if isinstance(out, tuple) else out).detach()

    return hook


def calibration_kl(base: Base, prompts: Sequence[str], answers: Sequence[Answer], vectors: dict[int, torch.Tensor], strength: float,
                   batch: int, lower: Layer | None = None) -> float:
    """Mean top-k KL(teacher ‖ steered) per answer token: the figure that picks layer and strength."""
    hooks = chain(layer_hooks(lower, base), lambda: steering(base.model, vectors, strength))
    return mean_topk_kl(Runner(base, lower.context(base) if lower else "", hooks, batch), prompts, answers)


def fit(manifesto: Manifesto, base: Base, config: SteerConfig, progress: bool = True,
        lower: Layer | None = None) -> tuple[dict[int, torch.Tensor], float, dict[str, Any]]:
    """Read the vectors and choose layer and strength. Returns ({layer: unscaled vector}, strength, figures).

    With `lower` (stacking), everything runs with the lower layer active: the teacher is the lower identity with the new
    manifesto in context, the contrast is the lower identity alone, so the vector is what the new text adds."""
    if config.contrast not in CONTRASTS:
        raise CredoError(f"steer: contrast must be one of {', '.join(CONTRASTS)}, got {config.contrast!r}")
    n_layers = len(decoder_layers(base.model))
    candidates = sorted(set(config.layers)) or sorted(range(n_layers - 2, max(n_layers // 2, 1) - 1, -2)) or [n_layers - 1]
    bad = [i for i in candidates if not 1 <= i < n_layers]
    if bad:
        raise CredoError(f"steer: layers {bad} are out of range; this base steers layers 1..{n_layers - 1} (llama.cpp cannot steer layer 0)")
    if config.read not in ("answer", "prompt"):
        raise CredoError(f"steer: read must be answer or prompt, got {config.read!r}")
    if not config.strengths or any(s <= 0 for s in config.strengths):
        raise CredoError("steer: strengths must be positive numbers")
    train, _ = split(manifesto)
    calib = [p for i, p in enumerate(train) if i % 4 == 3][: config.calibrate]
    extract = [p for p in train if p not in calib][: config.prompts]
    if not extract or not calib:
        raise CredoError("steer: the manifesto yields too few training prompts; add clauses or examples")
    low_ctx, low_hooks = (lower.context(base) if lower else ""), layer_hooks(lower, base)
    teacher = Runner(base, low_ctx + manifesto_context(manifesto, base), low_hooks, batch=config.batch)
    neutral = "" if config.contrast == "bare" else manifesto_context(_neutral(), base)
    contrast = Runner(base, low_ctx + neutral, low_hooks, batch=config.batch)
    path = steer_work(base, manifesto, config, lower) / "answers.safetensors"
    clock = time.perf_counter()
    teacher.batch = max(config.batch, len(calib) + len(extract) if config.read == "answer" else len(calib))  # one batched generation
    wanted = calib + extract if config.read == "answer" else calib
    generated = dict(zip(wanted, teacher_answers(teacher, wanted, config.answer_tokens, 32, path, progress="teacher answers" if progress else "")))
    teacher.batch = config.batch
    answers = [generated[p] for p in calib]
    timings = {"teacher_answers": round(time.perf_counter() - clock, 1)}
    clock = time.perf_counter()
    every = list(range(1, n_layers - 1)) if config.ladder else []
    vectors = read_differences(teacher, contrast, extract, sorted(set(candidates) | set(every)),
                               [generated[p].ids for p in extract] if config.read == "answer" else None)
    options: dict[str, dict[int, torch.Tensor]] = {str(i): {i: vectors[i]} for i in candidates}
    if every:  # each layer adds its own share of the difference, so the residual tracks the teacher's at every depth
        options["ladder"] = {i: vectors[i] - vectors[i - 1] if i - 1 in vectors else vectors[i] for i in every}
    timings["extract"] = round(time.perf_counter() - clock, 1)
    clock = time.perf_counter()
    bar = tqdm(total=1 + len(options) + len(config.strengths) - (1.0 in config.strengths), desc="steer search", disable=not progress, leave=False)

    def kl(vecs: dict[int, torch.Tensor], strength: float) -> float:
        value = calibration_kl(base, calib, answers, vecs, strength, config.batch, lower)
        bar.update(1)
        return value

    kl0 = kl({}, 0.0)
    by_option = {name: kl(vecs, 1.0) for name, vecs in options.items()}
    best = min(by_option, key=by_option.get)  # strength is then searched on the best option
    grid = {s: kl(options[best], s) for s in config.strengths if s != 1.0} | {1.0: by_option[best]}
    strength = min(grid, key=grid.get)
    bar.close()
    timings["search"] = round(time.perf_counter() - clock, 1)
    figures = {"calib_kl_base": round(kl0, 4), "calib_kl_steer": round(grid[strength], 4), "chosen": best,
               "calib_kl_by_layer": {name: round(v, 4) for name, v in by_option.items()}, "seconds_by_phase": timings}
    return options[best], strength, figures


def steer_work(base: Base, manifesto: Manifesto, config: SteerConfig, lower: Layer | None = None) -> Path:
    """Where a steer compile caches its teacher answers (a rerun skips generation; the bench deletes it to time a cold compile)."""
    context = (lower.context(base) if lower else "") + manifesto_context(manifesto, base)
    return work_dir("steer", base.sha256, context, lower_tag(lower), str(config.answer_tokens))


def _neutral() -> Manifesto:
    return Manifesto.from_text(NEUTRAL, source="<neutral>")


@register
class SteerLayer(Layer):
    kind = "steer"
    order = 30
    Config = SteerConfig
    resolved_settings = ("layers", "strength")  # recorded as chosen (the automatic defaults pick them), not as asked
    demo_settings = {"heldout": "0", "control": "false"}  # the demo measures fidelity and its own control itself

    def __init__(self, info: LayerInfo, manifesto: Manifesto, control: ControlVector):
        super().__init__(info, manifesto)
        self.control = control

    def payloads(self) -> list[object]:
        return [self.control]

    @property
    def vectors(self) -> dict[int, torch.Tensor]:
        return self.control.vectors

    @property
    def strength(self) -> float:
        return self.control.strength

    @classmethod
    def build_on(cls, manifesto: Manifesto, base: Base, config: SteerConfig | None, info: LayerInfo, lower: Layer | None) -> SteerLayer:
        """Compile on top of `lower` (None: on the bare base); the report measures against the lower identity."""
        config = config or SteerConfig()
        vectors, strength, figures = fit(manifesto, base, config, lower=lower)
        arch = gguf_arch(base.model)
        layer = cls(info, manifesto, ControlVector(vectors, strength, arch or "gemma3"))
        info.params.update(layers=sorted(vectors), strength=strength, gguf_arch=arch)
        info.report.update(figures)
        if config.heldout > 0:
            def control() -> Hooks:
                cv, cs, _ = fit(manifesto.shuffled(0), base, config, progress=False, lower=lower)
                info.report["control_strength"] = cs
                return lambda: steering(base.model, cv, cs)

            info.report.update(compile_report(base, manifesto, "steer", lambda: layer.applied(base.model),
                                              control if config.control else None, config.heldout, lower, config.batch))
        return layer

    def save_payload(self, folder: Path) -> None:
        self.control.save(folder / VECTORS_FILE)
        self.control.to_gguf(folder / CONTROL_GGUF)

    @classmethod
    def load_payload(cls, folder: Path, info: LayerInfo, manifesto: Manifesto) -> SteerLayer:
        control = ControlVector.load(folder / VECTORS_FILE, str(info.params.get("gguf_arch") or "gemma3"))
        control.strength = float(info.params["strength"])  # layer.json is what the layer was chosen with; the file's copy is informative
        return cls(info, manifesto, control)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        with steering(model, self.vectors, self.strength):
            yield
