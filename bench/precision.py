"""Side by side: the precision credo chooses (auto) against forced bf16 or fp32, on this CPU as it is and with its
kernels held to AVX2 (the class of a CPU without AVX512 or fast bf16).

Per CPU class (`native`; `avx2`: ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2) and per
precision asked for, each in its own process with a fresh cache folder (only the converted bases are shared):

1. `decision`: what `credo.runtime.precision` decides and what deciding cost (its micro-benchmark included where it
   runs), and a bf16-vs-fp32 matmul at the whole output head's shape: the check that a class really is slow in bf16;
2. `hyper`: a cold first compile of the manifesto (the keep moments are taken, over the shipped keep text where the
   base has one, else over text the base writes first; its first-token states are taken)
   and a warm one after it, wall seconds, with the quick look's held-out first-token fidelity;
3. `distill`: optimizer steps per second over `--distill-steps` steps (16 training prompts, no report).

    .venv/bin/python bench/precision.py --threads 2 [--classes native,avx2] [--precisions auto,bf16] \
        [--tasks decision,hyper,distill] [examples/honest.md]

Results go to bench/results/precision-<time>.json and .md, each with the machine header of each class.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLASSES = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
TASKS = ("decision", "hyper", "distill")


def head_matmul() -> dict[str, float]:
    """Best-of-2 milliseconds of 16 rows through the whole 262144 x 640 output head, in fp32 and in bf16."""
    import torch

    x, w = torch.randn(16, 640), torch.randn(262144, 640)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = x.to(dtype), w.to(dtype)
        torch.nn.functional.linear(a, b)
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            torch.nn.functional.linear(a, b)
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_ms"] = round(best * 1e3, 1)
    return out


def child(task: str, manifesto: str, steps: int) -> dict:
    from credo import int8_head
    from credo.runtime import precision

    if task == "decision":
        wall = time.perf_counter()
        p = precision.current()
        decided_s = time.perf_counter() - wall
        return {"precision": p.name, "reason": p.reason, "where": p.where, "decide_s": round(decided_s, 4),
                "micro_benchmark": precision.time_linear(names=("fp32", "bf16", *(("int8",) if int8_head.available() else ()))),
                "head_matmul": head_matmul()}
    from credo.base import load_base
    from credo.layers import compile_layer
    from credo.manifesto import Manifesto

    base, m = load_base(), Manifesto.from_file(manifesto)
    if task == "hyper":
        walls, cpus, looks = [], [], []
        for _ in range(2):  # cold (a fresh cache), then warm
            wall, cpu = time.perf_counter(), time.process_time()
            layer = compile_layer(m, base, "hyper")
            walls.append(round(time.perf_counter() - wall, 2))
            cpus.append(round(time.process_time() - cpu, 2))
            looks.append(layer.info.report.get("first_token_fidelity_heldout"))
        return {"precision": layer.info.precision, "cold_s": walls[0], "warm_s": walls[1], "cold_cpu_s": cpus[0], "warm_cpu_s": cpus[1],
                "first_token_fidelity_heldout": looks}
    settings = {"budget": str(steps), "prompts": "16", "chat": "false", "validate": "0", "heldout": "0", "control": "false"}
    layer = compile_layer(m, base, "distill", settings)
    r = layer.info.report
    return {"precision": layer.info.precision, "steps": r["steps"], "train_s": r["train_seconds"], "teacher_s": r["teacher_seconds"],
            "compile_s": layer.info.compile_seconds, "compile_cpu_s": layer.info.compile_cpu_seconds,
            "steps_per_s": round(r["steps"] / max(r["train_seconds"], 1e-9), 4), "train_kl": [r["train_kl_first"], r["train_kl_last"]]}


def fresh_cache() -> Path:
    """A cache folder of its own that shares only the converted bases (as tests/conftest.py `isolated_work` does)."""
    from credo.base import cache_dir

    shared, root = cache_dir(), Path(tempfile.mkdtemp(prefix="credo-precision-"))
    for name in ("bases", "gguf-hashes", "folder-hashes"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(shared / name, target_is_directory=True)
    return root


def run_child(cls: str, precision: str, task: str, args) -> dict:
    cache = fresh_cache()
    env = os.environ | CLASSES[cls] | {"CREDO_PRECISION": precision, "CREDO_CACHE": str(cache)}
    cmd = [sys.executable, __file__, args.manifesto, "--child", task, "--threads", str(args.threads), "--distill-steps", str(args.distill_steps)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"{cls}/{precision}/{task} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def header(cls: str, threads: int) -> tuple[dict, str]:
    code = (f"import torch; torch.set_num_threads({threads}); import json; "
            "from credo.runtime.precision import machine_header; print(json.dumps(machine_header()))")
    cache = fresh_cache()
    env = os.environ | CLASSES[cls] | {"CREDO_PRECISION": "auto", "CREDO_CACHE": str(cache)}
    try:
        facts, line = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return facts, line


def markdown(out: dict) -> str:
    lines = [f"# precision side by side ({out['when']}, {Path(out['manifesto']).stem}, {out['threads']} threads, load {out['load']})", ""]
    for cls, c in out["classes"].items():
        lines += [f"## {cls}", "", c["machine_line"], ""]
        if d := c.get("decision"):
            h = d["head_matmul"]
            lines += [f"- auto chose **{d['precision']}** ({d['reason']}) in {d['decide_s'] * 1e3:.1f} ms; the micro-benchmark alone "
                      f"takes {d['micro_benchmark']['seconds'] * 1e3:.0f} ms (fp32 {d['micro_benchmark']['fp32_ms']} ms, bf16 "
                      f"{d['micro_benchmark']['bf16_ms']} ms, int8 {d['micro_benchmark'].get('int8_ms', '–')} ms)",
                      f"- the whole head, 16 rows: fp32 {h['fp32_ms']} ms, bf16 {h['bf16_ms']} ms ({h['bf16_ms'] / h['fp32_ms']:.1f}x slower in bf16)"
                      if h["bf16_ms"] >= h["fp32_ms"] else f"- the whole head, 16 rows: fp32 {h['fp32_ms']} ms, bf16 {h['bf16_ms']} ms", ""]
        rows = c.get("runs", {})
        if rows:
            lines += ["| asked | ran in | hyper cold s (CPU s) | hyper warm s (CPU s) | quick-look fidelity | distill steps/s | "
                      "distill train KL first → last |", "| --- | --- | --- | --- | --- | --- | --- |"]
            for asked, r in rows.items():
                hy, di = r.get("hyper", {}), r.get("distill", {})
                kl = di.get("train_kl") or [None, None]
                lines.append(f"| {asked} | {hy.get('precision') or di.get('precision', '–')} | {hy.get('cold_s', '–')} ({hy.get('cold_cpu_s', '–')}) | "
                             f"{hy.get('warm_s', '–')} ({hy.get('warm_cpu_s', '–')}) | "
                             f"{hy.get('first_token_fidelity_heldout', '–')} | {di.get('steps_per_s', '–')} | "
                             + (f"{kl[0]:.3f} → {kl[1]:.3f} |" if kl[0] is not None else "– |"))
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifesto", nargs="?", default=str(REPO / "examples" / "honest.md"))
    ap.add_argument("--classes", default="native,avx2")
    ap.add_argument("--precisions", default="auto,bf16")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--distill-steps", type=int, default=4)
    ap.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.manifesto, args.distill_steps)))
        return
    classes, precisions, tasks = args.classes.split(","), args.precisions.split(","), args.tasks.split(",")
    if bad := [c for c in classes if c not in CLASSES] + [t for t in tasks if t not in TASKS]:
        ap.error(f"unknown class or task: {', '.join(bad)}")
    out: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "manifesto": args.manifesto, "threads": args.threads,
                 "load": round(os.getloadavg()[0], 2), "classes": {}}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = REPO / "bench" / "results"
    dest.mkdir(parents=True, exist_ok=True)
    for cls in classes:  # one run at a time: the machine's cores are the thing measured
        facts, line = header(cls, args.threads)
        print(line, flush=True)
        c = out["classes"].setdefault(cls, {"machine": facts, "machine_line": line, "runs": {}})
        if "decision" in tasks:
            c["decision"] = run_child(cls, "auto", "decision", args)
            print(f"  {cls} decision: {json.dumps(c['decision'])}", flush=True)
        for precision in precisions:
            for task in (t for t in tasks if t != "decision"):
                c["runs"].setdefault(precision, {})[task] = got = run_child(cls, precision, task, args)
                print(f"  {cls} {precision} {task}: {json.dumps(got)}", flush=True)
                (dest / f"precision-{stamp}.json").write_text(json.dumps(out, indent=1))
        out["load_after"] = round(os.getloadavg()[0], 2)
        (dest / f"precision-{stamp}.json").write_text(json.dumps(out, indent=1))
        (dest / f"precision-{stamp}.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
