"""`distill` against TRL's own self-distillation, at the same wall-clock budget: held-out fidelity reached per minute.

    .venv/bin/python bench/trl_distill.py --manifesto examples/pirate.md --minutes 5

TRL's reference for "the model with the manifesto in context teaches the model without it" is `SDFTTrainer`
(trl.experimental.sdft, self-distillation with a privileged context): the student samples its own answers
(on-policy) and is pulled towards the base's top-k next-token distributions with the manifesto ahead of the prompt
(the adapter switched off is the teacher). `distill` is off-policy: the teacher answers once, greedily, and the student
matches the teacher's top-k distributions plus a tail bucket on those answers. Both train distill's LoRA (rank, targets,
initial weights, learning rate and its warm-up and decay over the budget) on the same training prompts; the budget is
the whole compile (distill's includes its teacher answers). Fidelity is measured the same way for both, on held-out
prompts never trained on. Results go to bench/results/trl-distill-<time>.json and .md.
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


def sdft(manifesto: Any, base: Any, minutes: float, prompts: list[str], config: Any, work: Path, progress: bool = True) -> tuple[Any, Any]:
    """TRL's SDFT on distill's LoRA and schedule until `minutes` of wall clock are spent; returns (weights, progress)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from credo.layers.kinds.distill import Budget
    from credo.layers.kinds.retrain import Session, shared_copy, trl_arguments
    from credo.layers.lora import LoraWeights
    from credo.manifesto import manifesto_context
    from credo.runtime.teacher import frozen

    context = manifesto_context(manifesto, base)
    rows = [{"prompt": base.format_chat([{"role": "user", "content": p}]), "privileged_context": context} for p in prompts]
    budget = Budget(minutes=minutes)
    init = LoraWeights.init(base.model, r=config.r, alpha=config.alpha, targets=tuple(config.targets), seed=config.seed)
    peft = LoraConfig(r=config.r, lora_alpha=config.alpha, target_modules=list(config.targets), lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    arguments = trl_arguments(config, base, work, 1 << 30, progress)
    arguments.pop("max_length")
    args = SDFTConfig(**arguments, teacher_model_kind="base", teacher_prompt_template="{privileged_context}{prompt}",
                      num_generations=1, max_completion_length=config.answer_tokens, max_prompt_length=None)
    with frozen(base.model), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = SDFTTrainer(model=shared_copy(base.model), args=args, train_dataset=Dataset.from_list(rows), processing_class=base.tokenizer,
                              peft_config=peft)
        run = Session(trainer.model, config, work, budget, init)
        trainer.optimizer, trainer.lr_scheduler = run.opt, run.schedule
        trainer.add_callback(run.callback("sdft", progress))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        return run.weights(base), run.progress


def fidelity(base: Any, manifesto: Any, weights: Any, heldout: int) -> dict[str, Any]:
    from credo.layers.lora import lora_hooks
    from credo.runtime.teacher import Runner, heldout_report

    return heldout_report(base, manifesto, {"layer": Runner(base, "", lambda: lora_hooks(base.model, weights))}, heldout, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifesto", default=str(ROOT / "examples" / "pirate.md"))
    ap.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of each, the whole compile")
    ap.add_argument("--prompts", type=int, default=0, help="training prompts (0: all, the everyday pool included)")
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default=None, help="base spec (default: the embedded Gemma 3 270M)")
    args = ap.parse_args()

    import torch

    from credo.base import load_base
    from credo.layers.kinds.distill import Budget, DistillConfig, distill, training_prompts
    from credo.layers.kinds.retrain import RetrainConfig
    from credo.manifesto import Manifesto
    from credo.runtime.teacher import work_dir

    torch.set_num_threads(args.threads)
    base = load_base(args.base)
    manifesto = Manifesto.from_file(args.manifesto)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"manifesto": args.manifesto, "minutes": args.minutes, "prompts": args.prompts, "threads": args.threads,
                               "base": base.name, "started": stamp}

    config = DistillConfig(budget=f"{args.minutes}m", prompts=args.prompts, heldout=0, control=False, seed=int(time.time()) % 100000)
    start = time.perf_counter()
    weights, progress, figures = distill(manifesto, base, config, Budget(minutes=args.minutes))  # a fresh seed: no checkpoint to resume
    results["distill"] = {"wall_seconds": round(time.perf_counter() - start, 1), "steps": progress.step,
                          "teacher_seconds": figures["teacher_seconds"], **fidelity(base, manifesto, weights, args.heldout)}
    print(f"distill: {results['distill']['steps']} steps, fidelity {results['distill']['fidelity_layer']:.3f}", flush=True)

    rconfig = RetrainConfig(prompts=args.prompts, seed=config.seed)
    work = work_dir("trl-sdft", stamp)
    start = time.perf_counter()
    weights, progress = sdft(manifesto, base, args.minutes, training_prompts(manifesto, args.prompts, True), rconfig, work)
    shutil.rmtree(work, ignore_errors=True)
    results["sdft"] = {"wall_seconds": round(time.perf_counter() - start, 1), "steps": progress.step, **fidelity(base, manifesto, weights, args.heldout)}
    print(f"TRL SDFT: {results['sdft']['steps']} steps, fidelity {results['sdft']['fidelity_layer']:.3f}", flush=True)

    for k in ("distill", "sdft"):
        results[k]["fidelity_per_minute"] = round(results[k]["fidelity_layer"] / (results[k]["wall_seconds"] / 60), 4)
    results["ratio_distill_over_sdft"] = round(results["distill"]["fidelity_layer"] / results["sdft"]["fidelity_layer"], 3) \
        if results["sdft"]["fidelity_layer"] > 0 else None
    out = ROOT / "bench" / "results" / f"trl-distill-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# distill vs TRL SDFT: {Path(args.manifesto).name}, {args.minutes:g} min each, {args.threads} threads ({stamp})", "",
             "| trainer | steps | wall s | held-out fidelity | fidelity per minute |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {k} | {results[k]['steps']} | {results[k]['wall_seconds']:.0f} | {results[k]['fidelity_layer']:.3f} "
              f"| {results[k]['fidelity_per_minute']:.3f} |"
              for k in ("distill", "sdft")]
    lines += ["", f"distill / SDFT fidelity at equal budget: {results['ratio_distill_over_sdft']}"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
