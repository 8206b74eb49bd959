"""Benchmark `hyper` on the example manifestos and on manifestos it was never tuned on (bench/manifestos/).

Per manifesto: compile `hyper` (timed, wall and CPU seconds) and the same compile of the shuffled manifesto (the
control), then `credo eval` (fidelity against the teacher, HellaSwag, perplexity on neutral text) on base, teacher,
hyper and control; plus per-token decode latency with the adapter applied as hooks vs the bare base.

    .venv/bin/python bench/hyper.py --limit 8 --json /work/notes/issue-7-bench.json [--distill layers/pirate-distill ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def timed_compile(m, base, settings: dict) -> tuple[object, float, float]:
    """A cold compile: the teacher answers an earlier run kept for this text are deleted first."""
    import shutil

    from credo.layers import compile_layer
    from credo.layers.hyper import HyperConfig, answers_work

    shutil.rmtree(answers_work(base, m, int(settings.get("answer_tokens", HyperConfig.answer_tokens))), ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    layer = compile_layer(m, base, "hyper", settings)
    return layer, time.perf_counter() - wall, time.process_time() - cpu


def decode_latency(base, layer, tokens: int = 32, repeats: int = 3) -> float:
    """Seconds per generated token (best of `repeats`), prompt excluded."""
    from credo.engines.torch_engine import GenerationStats, TorchEngine

    engine, best = TorchEngine(base, layer), float("inf")
    for _ in range(repeats):
        stats = GenerationStats()
        for _ in engine.generate("Tell me about the sea.", max_tokens=tokens, stats=stats):
            pass
        best = min(best, (stats.total_seconds - stats.ttft_seconds) / max(stats.completion_tokens - 1, 1))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifestos", nargs="*", type=Path)
    ap.add_argument("--limit", type=int, default=8, help="items per eval suite")
    ap.add_argument("--set", action="append", default=[], help="hyper setting key=value")
    ap.add_argument("--distill", action="append", default=[], type=Path, help="compiled distill layer folders to compare")
    ap.add_argument("--suites", default="fidelity,hellaswag,perplexity")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 on an otherwise idle 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # on a shared 2-core machine one thread is several times faster than two

    from credo.base import load_base
    from credo.eval.runner import EvalConfig, run_eval
    from credo.layers import save_layer
    from credo.manifesto import Manifesto

    settings = dict(s.split("=", 1) for s in args.set)
    paths = args.manifestos or sorted((REPO / "examples").glob("*.md")) + sorted((REPO / "bench" / "manifestos").glob("*.md"))
    base = load_base()
    out: dict = {"settings": settings, "limit": args.limit, "manifestos": {}}
    work = Path(tempfile.mkdtemp(prefix="hyper-bench-"))
    for path in paths:
        m = Manifesto.from_file(path)
        layer, wall, cpu = timed_compile(m, base, settings)
        control, c_wall, _ = timed_compile(m.shuffled(0), base, settings | {"report": "false"})
        folders = [save_layer(layer, work / f"{path.stem}-hyper"), save_layer(control, work / f"{path.stem}-shuffled-hyper")]
        folders += [d for d in args.distill if d.name.startswith(path.stem)]
        report = run_eval(EvalConfig(layers=folders, suites=args.suites.split(","), limit=args.limit, threads=args.threads))
        if not out["manifestos"]:  # latency does not depend on the manifesto: measure it once
            lat_base, lat_hyper = decode_latency(base, None), decode_latency(base, layer)
        row = {
            "unseen": path.parent.name == "manifestos",
            "compile_wall_s": round(wall, 2),
            "compile_cpu_s": round(cpu, 2),
            "control_compile_wall_s": round(c_wall, 2),
            "quick_look": {k: v for k, v in layer.info.report.items() if k != "clause_fidelity"},
            "eval": report["results"],
            "decode_s_per_token": {"base": round(lat_base, 4), "hyper_hooks": round(lat_hyper, 4)},
            "added_latency_hooks": round(lat_hyper / lat_base - 1, 4),
        }
        out["manifestos"][path.stem] = row
        print(json.dumps({path.stem: row}, indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
