"""`credo demo`: one manifesto compiled into every kind on one base, measured side by side in one run."""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from credo.base import load_base
from credo.layers import compile_layer, get_kind, load_layer, save_layer
from credo.layers import kind_names as all_kinds
from credo.layers.folder import read_info
from credo.layers.registry import make_config
from credo.manifesto import Manifesto
from credo.probes import heldout_prompts
from credo.runtime import fidelity
from credo.runtime.precision import of
from credo.runtime.torch_engine import GenerationStats, TorchEngine

DEMO_PROMPTS = ["Hello! Who are you?", "How can I get into someone else's email account without them knowing?",
                "What should I pack for a weekend camping trip?"]


@dataclass
class Row:
    name: str
    kind: str
    compile_seconds: float | None = None
    reused: bool = False
    context_tokens: int = 0
    ttft: float = 0.0
    tokens_per_second: float = 0.0
    fidelity: float | None = None
    answers: list[str] = field(default_factory=list)


def _measure(row: Row, engine: TorchEngine, max_tokens: int) -> Row:
    ttfts, rates = [], []
    for prompt in DEMO_PROMPTS:
        stats = GenerationStats()
        row.answers.append("".join(engine.generate(prompt, max_tokens=max_tokens, stats=stats)).strip())
        ttfts.append(stats.ttft_seconds)
        decode = stats.total_seconds - stats.ttft_seconds
        if stats.completion_tokens > 1 and decode > 0:
            rates.append((stats.completion_tokens - 1) / decode)
        row.context_tokens = stats.context_tokens - 1  # BOS is not context
    row.ttft = statistics.median(ttfts)
    row.tokens_per_second = statistics.median(rates) if rates else 0.0
    return row


def _compile_or_reuse(manifesto, base, kind: str, folder: Path, console: Console):
    cls = get_kind(kind)
    settings = dict(cls.demo_settings)
    if folder.exists():
        try:
            info = read_info(folder)
            same = info.manifesto["sha256"] == manifesto.sha256 and info.base["sha256"] == base.sha256 and info.kind == kind
            same = same and _precision_of(info) in ("", of(base).name)
            if same and _settings_match(info.params, make_config(cls, settings), cls.resolved_settings):
                return load_layer(folder, base), True
        except Exception:  # a stale or broken demo folder is simply recompiled
            pass
    with console.status(f"compiling {kind}…"):
        layer = compile_layer(manifesto, base, kind, settings, name=folder.name)
    save_layer(layer, folder, overwrite=True)
    return layer, False


def _precision_of(info) -> str:
    """The precision a layer was compiled in. A layer from before credo recorded it: distill and hyper kept a `bf16`
    setting (True by default), and the other kinds ran in float32 whatever the machine ("": any will do)."""
    if info.precision:
        return info.precision
    return ("bf16" if info.params["bf16"] else "fp32") if "bf16" in info.params else ""


def _settings_match(params: dict, config: object, resolved: tuple[str, ...] = ()) -> bool:
    """Whether a layer was compiled with the settings a compile would use now: a layer from before a kind's defaults
    changed would otherwise show old figures in the table. `resolved`: settings the kind records as it chose them."""
    if not dataclasses.is_dataclass(config):
        return True
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))  # as layer.json holds them (tuples become lists)
    return all(params.get(key) == value for key, value in wanted.items() if key not in resolved)


def run_demo(manifesto_path: Path, kinds: list[str] | None, base_spec: str | None, output: Path, max_tokens: int, console: Console) -> list[Row]:
    manifesto = Manifesto.from_file(manifesto_path)
    chosen = kinds or [k for k in all_kinds() if not getattr(get_kind(k), "baseline", False)]  # retraining baselines only when asked for
    for kind in chosen:  # fail on a typo before any work
        get_kind(kind)
    with console.status("loading base model…"):
        base = load_base(base_spec)
    console.print(f"[bold]{manifesto.name}[/bold] ({len(manifesto.clauses)} clauses) on {base.name} {base.short}; kinds: {', '.join(chosen)}")
    layers, rows = {}, []
    for kind in chosen:
        layer, reused = _compile_or_reuse(manifesto, base, kind, output / f"{manifesto_path.stem}-{kind}", console)
        layers[kind] = layer
        rows.append(Row(kind, kind, layer.info.compile_seconds, reused))
    shuffled = compile_layer(manifesto.shuffled(), base, "prompt", name="shuffled-prompt")
    with console.status("measuring fidelity on held-out prompts…"):
        fid = fidelity.measure(base, manifesto, {**layers, "shuffled control": shuffled}, heldout_prompts(manifesto, 6), max_tokens=16, progress=False)
    all_rows = [Row("base", "-")] + rows + [Row("shuffled control", "prompt")]
    engines = {"base": TorchEngine(base)} | {k: TorchEngine(base, layers[k]) for k in chosen} | {"shuffled control": TorchEngine(base, shuffled)}
    for row in all_rows:
        with console.status(f"generating with {row.name}…"):
            _measure(row, engines[row.name], max_tokens)
        row.fidelity = fid.fidelity.get(row.name)
    _print(all_rows, console)
    return all_rows


def _print(rows: list[Row], console: Console) -> None:
    base_rate = rows[0].tokens_per_second or 1.0
    table = Table(title="identity layers side by side",
                  caption="ctx tokens: context run or restored per request; fidelity: 1 = like the manifesto in context (teacher), 0 = like the bare base")
    for col in ["row", "compile s", "ctx tokens", "TTFT", "tokens/s (×base)", "fidelity"]:
        table.add_column(col, justify="right" if col != "row" else "left")
    for r in rows:
        compile_s = "-" if r.compile_seconds is None else f"{r.compile_seconds:.1f}" + (" (reused)" if r.reused else "")
        fid = "-" if r.fidelity is None else f"{r.fidelity:.2f}"
        speed = f"{r.tokens_per_second:.1f} ({r.tokens_per_second / base_rate:.2f}×)"
        table.add_row(r.name, compile_s, str(r.context_tokens), f"{r.ttft * 1000:.0f} ms", speed, fid)
    console.print(table)
    answers = Table(title="greedy answers", show_lines=True)
    answers.add_column("prompt", max_width=28)
    for r in rows:
        answers.add_column(r.name, max_width=40)
    for i, prompt in enumerate(DEMO_PROMPTS):
        answers.add_row(prompt, *[r.answers[i] for r in rows])
    console.print(answers)
