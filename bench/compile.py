"""Compile time and held-out fidelity of `steer` and `distill` on the example manifestos, each against its
shuffled-manifesto control.

    .venv/bin/python bench/compile.py                       # every example, both kinds, distill within 15 minutes
    .venv/bin/python bench/compile.py --manifestos examples/pirate.md --minutes 15 --heldout 24

Fidelity = 1 − KL(teacher ‖ layer) / KL(teacher ‖ base) over the teacher's greedy answers to held-out prompts (never
trained on); the teacher is the base with the manifesto in context. Distill's learning rate decays over its budget,
so the default measures one 15-minute compile; extra --minutes points resume that run at growing budgets (each
re-opens the lr: a warm restart, not what a compile of that length alone gives). Targets (2 CPU cores, Gemma 3 270M): steer compiles in
≤ 60 s; distill reaches fidelity ≥ 0.8 within 15 minutes; both clearly above the shuffled control. Results go to
bench/results/compile-<time>.json and .md; interrupting and rerunning resumes the distill runs from their checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEER_TARGET_S, DISTILL_TARGET_MIN, DISTILL_TARGET_FID = 60.0, 15.0, 0.8


def bench_steer(base, manifesto, heldout: int) -> dict:
    import shutil

    from credo.layers import compile_layer
    from credo.layers.kinds.steer import SteerConfig, steer_work

    for m in (manifesto, manifesto.shuffled(0)):  # time a cold compile: no teacher answers left from an earlier run
        shutil.rmtree(steer_work(base, m, SteerConfig()), ignore_errors=True)
    layer = compile_layer(manifesto, base, "steer", {"heldout": str(heldout), "control": "true"})
    rep = layer.info.report
    return {
        "compile_seconds": round(layer.info.compile_seconds - rep.get("report_seconds", 0), 1),  # the compile, not its measuring
        "compile_cpu_seconds": layer.info.compile_cpu_seconds,
        "seconds_by_phase": rep.get("seconds_by_phase"),
        "control_compile_seconds": rep.get("control_compile_seconds"),
        "layer": layer.info.params["layers"],
        "strength": layer.info.params["strength"],
        "fidelity": rep["fidelity_steer"],
        "fidelity_control": rep.get("fidelity_control"),
        "kl_base": rep["kl_base"],
        "kl": rep["kl_steer"],
        "kl_control": rep.get("kl_control"),
        "calib_kl_by_layer": rep.get("calib_kl_by_layer"),
    }


def bench_distill(base, manifesto, heldout: int, minutes: list[float], settings: dict) -> dict:
    from credo.layers.kinds.distill import Budget, DistillConfig, distill
    from credo.layers.lora import lora_hooks
    from credo.runtime.teacher import Runner, heldout_report

    config = DistillConfig(**settings)
    curve = []
    wall = time.perf_counter()
    for limit in minutes:
        start = time.perf_counter()
        weights, progress, fig = distill(manifesto, base, config, Budget(minutes=limit))
        rep = heldout_report(base, manifesto, {"distill": Runner(base, "", lambda w=weights: lora_hooks(base.model, w))}, heldout)
        point = {
            "train_minutes": round(progress.seconds / 60, 2),
            "teacher_minutes": round(fig["teacher_seconds"] / 60, 2),
            "steps": progress.step,
            "fidelity": rep["fidelity_distill"],
            "kl": rep["kl_distill"],
            "kl_base": rep["kl_base"],
            "train_kl_last": fig["train_kl_last"],
            "session_seconds": round(time.perf_counter() - start, 1),
        }
        point["compile_minutes"] = round(point["train_minutes"] + point["teacher_minutes"], 2)
        curve.append(point)
        print(f"  distill at {point['compile_minutes']:.1f} min ({point['steps']} steps): fidelity {point['fidelity']:.3f}", flush=True)
    steps = curve[-1]["steps"]
    t0 = time.perf_counter()
    cw, cprog, cfig = distill(manifesto.shuffled(0), base, config, Budget(steps=steps), label="control")
    crep = heldout_report(base, manifesto, {"control": Runner(base, "", lambda: lora_hooks(base.model, cw))}, heldout)
    return {
        "curve": curve,
        "fidelity": curve[-1]["fidelity"],
        "compile_minutes": curve[-1]["compile_minutes"],
        "fidelity_control": crep["fidelity_control"],
        "kl_control": crep["kl_control"],
        "control_steps": cprog.step,
        "control_minutes": round((time.perf_counter() - t0) / 60, 2),
        "settings": settings,
        "bench_minutes": round((time.perf_counter() - wall) / 60, 2),
    }


def markdown(results: dict) -> str:
    lines = [f"# compile bench ({results['when']}, {results['threads']} torch threads, load {results['load']})", "",
             results["machine_line"], ""]
    lines += ["| manifesto | kind | compile | fidelity | shuffled control | target |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results["manifestos"].items():
        if s := r.get("steer"):
            ok = s["compile_seconds"] <= STEER_TARGET_S and s["fidelity"] > (s["fidelity_control"] if s["fidelity_control"] is not None else 0)
            lines.append(f"| {name} | steer | {s['compile_seconds']:.0f} s | {s['fidelity']:.3f} | {s['fidelity_control']:.3f} | "
                         f"≤ {STEER_TARGET_S:.0f} s, above control: {'met' if ok else 'missed'} |")
        if d := r.get("distill"):
            # met when some point of the curve reaches the fidelity within the time (a budget stops after the step that crosses it)
            hit = next((p for p in d["curve"] if p["fidelity"] >= DISTILL_TARGET_FID and p["compile_minutes"] <= DISTILL_TARGET_MIN + 0.25), None)
            verdict = f"met at {hit['compile_minutes']:.1f} min" if hit else "missed"
            lines.append(f"| {name} | distill | {d['compile_minutes']:.1f} min | {d['fidelity']:.3f} | {d['fidelity_control']:.3f} | "
                         f"≥ {DISTILL_TARGET_FID} in ≤ {DISTILL_TARGET_MIN:.0f} min: {verdict} |")
    for name, r in results["manifestos"].items():
        if d := r.get("distill"):
            lines += ["", f"distill curve, {name}: " + ", ".join(f"{p['compile_minutes']:.1f} min → {p['fidelity']:.3f}" for p in d["curve"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifestos", nargs="*", default=sorted(str(p) for p in (ROOT / "examples").glob("*.md")))
    ap.add_argument("--kinds", default="steer,distill")
    ap.add_argument("--minutes", default="15", help="distill budgets (whole compile, minutes) at which fidelity is measured")
    ap.add_argument("--heldout", type=int, default=12, help="held-out prompts per fidelity measurement")
    ap.add_argument("--set", action="append", default=[], help="distill setting key=value")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from credo.base import load_base
    from credo.manifesto import Manifesto
    from credo.runtime.precision import machine_header

    machine, machine_line = machine_header()
    print(machine_line, flush=True)
    settings = dict(kv.split("=", 1) for kv in args.set)
    import dataclasses

    from credo.layers.kinds.distill import DistillConfig
    from credo.layers.registry import _convert

    fields = {f.name: f for f in dataclasses.fields(DistillConfig)}
    settings = {k: _convert(v, fields[k], "distill") for k, v in settings.items()}
    base = load_base()
    kinds = args.kinds.split(",")
    results = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
               "load": os.getloadavg()[0], "base": base.name, "machine": machine, "machine_line": machine_line, "manifestos": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in args.manifestos:
        m = Manifesto.from_file(path)
        name = Path(path).stem
        r = results["manifestos"].setdefault(name, {})
        print(f"{name}:", flush=True)
        if "steer" in kinds:
            r["steer"] = bench_steer(base, m, args.heldout)
            print(f"  steer: {r['steer']['compile_seconds']} s, fidelity {r['steer']['fidelity']}, control {r['steer']['fidelity_control']}", flush=True)
        if "distill" in kinds:
            r["distill"] = bench_distill(base, m, args.heldout, [float(x) for x in args.minutes.split(",")], settings)
            print(f"  distill: fidelity {r['distill']['fidelity']}, control {r['distill']['fidelity_control']}", flush=True)
        results["load_after"] = os.getloadavg()[0]
        (out / f"compile-{stamp}.json").write_text(json.dumps(results, indent=1))
        (out / f"compile-{stamp}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    sys.exit(main())
