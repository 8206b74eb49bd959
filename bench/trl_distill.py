"""`distill` against TRL's own self-distillation, at the same wall-clock budget: held-out fidelity reached per minute.

    .venv/bin/python bench/trl_distill.py                       # pirate (tuned on) and clinic (never tuned on), 5 minutes each
    .venv/bin/python bench/trl_distill.py --manifestos bench/manifestos/bard.md --minutes 3

TRL's reference for "the model with the manifesto in context teaches the model without it" is `SDFTTrainer`
(trl.experimental.sdft, self-distillation with a privileged context): the student samples its own answers
(on-policy) and is pulled towards the base's top-k next-token distributions with the manifesto ahead of the prompt
(the adapter switched off is the teacher). `distill` is off-policy: the teacher answers once, greedily, and the student
matches the teacher's top-k distributions plus a tail bucket on those answers. Both train distill's LoRA (rank, targets,
initial weights, learning rate and its warm-up and decay over the budget) on the same training prompts; the budget is
the whole compile (distill's includes its teacher answers). Fidelity is measured the same way for both: on the
template held-out probes and on the manifesto's realistic set (hand-written user messages no compile reads), with the
facts kept. Raw results go to bench/results/trl-distill-<time>.json; the table of the run to bench/RESULTS-trl-distill.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "bench" / "RESULTS-trl-distill.md"  # the last full run's table, what README and the issue quote
DEFAULT_MANIFESTOS = [ROOT / "examples" / "pirate.md", ROOT / "bench" / "manifestos" / "clinic.md"]  # one tuned on, one never
TRAINERS = ("distill", "sdft")


def sdft(manifesto: Any, base: Any, budget: Any, prompts: list[str], config: Any, work: Path, progress: bool = True) -> tuple[Any, Any]:
    """TRL's SDFT on distill's LoRA and schedule until `budget` (a distill Budget) is spent; returns (weights, progress)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback

    warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")  # this bench means to: SDFT lives there
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from credo.layers.kinds.retrain import Session, shared_copy, trl_arguments
    from credo.layers.lora import LoraWeights
    from credo.manifesto import manifesto_context
    from credo.runtime.teacher import frozen
    from credo.runtime.team import Team

    context = manifesto_context(manifesto, base)
    rows = [{"prompt": base.format_chat([{"role": "user", "content": p}]), "privileged_context": context} for p in prompts]
    team = Team.of(base)
    init = LoraWeights.init(base.model, r=config.r, alpha=config.alpha, targets=tuple(config.targets), seed=config.seed)
    peft = LoraConfig(r=config.r, lora_alpha=config.alpha, target_modules=list(config.targets), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    arguments = trl_arguments(config, base, work, budget.steps or 1 << 30, progress, team.size)
    arguments.pop("max_length")
    args = SDFTConfig(**arguments, teacher_model_kind="base", teacher_prompt_template="{privileged_context}{prompt}",
                      num_generations=1, max_completion_length=config.answer_tokens, max_prompt_length=None)
    with frozen(base.model), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = SDFTTrainer(model=shared_copy(base.model), args=args, train_dataset=Dataset.from_list(rows), processing_class=base.tokenizer,
                              peft_config=peft)
        run = Session(trainer.model, config, work, budget, init, team)
        trainer.optimizer, trainer.lr_scheduler = run.opt, run.schedule
        trainer.add_callback(run.callback("sdft", progress))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return run.weights(base), run.progress


def as_layer(manifesto: Any, base: Any, weights: Any, name: str) -> Any:
    """A trained adapter as a distill layer in memory, so both trainers are scored by the same code as any layer."""
    from credo.layers.kinds.distill import DistillLayer
    from credo.layers.layer import LayerInfo

    info = LayerInfo(kind="distill", name=name, manifesto={"sha256": manifesto.sha256, "name": manifesto.name},
                     base={"sha256": base.sha256, "name": base.name, "spec": base.spec})
    return DistillLayer(info, manifesto, weights)


def measure(base: Any, manifesto: Any, layers: dict[str, Any], heldout: int) -> dict[str, dict[str, Any]]:
    """Template held-out fidelity, realistic fidelity and facts kept of each layer, against one teacher."""
    from credo.eval.realistic import figures
    from credo.realistic import load_for
    from credo.runtime.teacher import Runner, heldout_report

    template = heldout_report(base, manifesto, {k: Runner.for_layer(base, v) for k, v in layers.items()}, heldout, progress=False)
    out = {k: {"template": template[f"fidelity_{k}"]} for k in layers}
    found = load_for(manifesto)
    if found is not None:
        fig = figures(base, manifesto, layers, list(found.items), 24)
        for k in layers:
            out[k] |= {"realistic": fig["fidelity"][k], "realistic_items": fig["items"]}
            if "facts" in fig:
                out[k]["facts"] = fig["facts"][k]
    return out


def facts_cell(r: dict[str, Any]) -> str:
    facts = r.get("facts")
    if not isinstance(facts, dict):
        return "–"
    return f"{facts['kept']}/{facts['teacher_gives']}"


def markdown(results: dict[str, Any]) -> str:
    lines = ["# distill against TRL's self-distillation (SDFT) at equal wall clock", "",
             f"{results['machine_line']}; {results['minutes']:g} minutes each, the whole compile ({results['started']}).", "",
             "Fidelity = 1 - KL(teacher||layer)/KL(teacher||base) per token of the teacher's 24-token greedy answers: *template* on "
             f"{results['heldout']} held-out probes of `credo.probes`, *realistic* on the manifesto's hand-written user messages "
             "(`NAME.realistic.jsonl`, read by no compile). Facts kept: fact questions where the layer ranks the manifesto's "
             "fact above close alternatives, out of those where the teacher does.", "",
             "| manifesto | trainer | steps | wall s | template | realistic | realistic per minute | facts kept |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for stem, row in results["manifestos"].items():
        for k in TRAINERS:
            r = row[k]
            real = r.get("realistic")
            per_min = f"{real / (r['wall_seconds'] / 60):.3f}" if isinstance(real, (int, float)) else "–"
            lines.append(f"| {stem} | {k} | {r['steps']} | {r['wall_seconds']:.0f} | {r['template']:.3f} | "
                         f"{'–' if real is None else f'{real:.3f}'} | {per_min} | {facts_cell(r)} |")
    lines.append("")
    for stem, row in results["manifestos"].items():
        ratio = ", ".join(f"{fig} {row['distill'][fig] / row['sdft'][fig]:.2f}x" for fig in ("template", "realistic")
                          if isinstance(row["sdft"].get(fig), (int, float)) and row["sdft"][fig] > 0)
        lines.append(f"- {stem}: distill / SDFT fidelity at equal wall clock: {ratio or 'SDFT at or below the bare base'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifestos", default="", help="comma-separated manifesto files (default: examples/pirate.md and bench/manifestos/clinic.md)")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of each, the whole compile")
    ap.add_argument("--prompts", type=int, default=0, help="training prompts (0: all, the everyday pool included)")
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default=None, help="base spec (default: the embedded Gemma 3 270M)")
    args = ap.parse_args()

    import torch

    from credo.base import load_base
    from credo.fsutil import write_text_atomic
    from credo.layers.kinds.distill import Budget, DistillConfig, distill, training_prompts
    from credo.layers.kinds.retrain import RetrainConfig
    from credo.manifesto import Manifesto
    from credo.runtime.precision import machine_header
    from credo.runtime.teacher import work_dir

    paths = [Path(m).resolve() for m in args.manifestos.split(",") if m] or DEFAULT_MANIFESTOS
    manifestos = {p.stem: Manifesto.from_file(p) for p in paths}  # every manifesto checked before the model loads
    torch.set_num_threads(args.threads)
    base = load_base(args.base)
    machine, machine_line = machine_header()
    print(machine_line, flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"minutes": args.minutes, "prompts": args.prompts, "threads": args.threads, "heldout": args.heldout,
                               "base": base.name, "started": stamp, "machine": machine, "machine_line": machine_line, "manifestos": {}}
    for stem, manifesto in manifestos.items():
        row: dict[str, Any] = {"source": str(manifesto.source)}
        config = DistillConfig(budget=f"{args.minutes}m", prompts=args.prompts, heldout=0, control=False, seed=int(time.time()) % 100000)
        start = time.perf_counter()
        weights, progress, figures = distill(manifesto, base, config, Budget(minutes=args.minutes))  # a fresh seed: no checkpoint to resume
        row["distill"] = {"wall_seconds": round(time.perf_counter() - start, 1), "steps": progress.step, "teacher_seconds": figures["teacher_seconds"]}
        layers = {"distill": as_layer(manifesto, base, weights, f"{stem}-distill")}
        print(f"{stem}: distill {progress.step} steps", flush=True)

        work = work_dir("trl-sdft", stamp, stem)
        start = time.perf_counter()
        rconfig = RetrainConfig(prompts=args.prompts, seed=config.seed)
        weights, progress = sdft(manifesto, base, Budget(minutes=args.minutes), training_prompts(manifesto, args.prompts, True), rconfig, work)
        shutil.rmtree(work, ignore_errors=True)
        row["sdft"] = {"wall_seconds": round(time.perf_counter() - start, 1), "steps": progress.step}
        layers["sdft"] = as_layer(manifesto, base, weights, f"{stem}-sdft")
        print(f"{stem}: TRL SDFT {progress.step} steps", flush=True)

        for k, figs in measure(base, manifesto, layers, args.heldout).items():
            row[k].update(figs)
        results["manifestos"][stem] = row
        print(json.dumps({stem: row}, indent=1), flush=True)
    out = ROOT / "bench" / "results" / f"trl-distill-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    write_text_atomic(TABLE, text)
    print(text)


if __name__ == "__main__":
    main()
