"""Sweep `hyper` settings: per manifesto and setting, compile time, fidelity on held-out prompts, perplexity on neutral text.

The figures earlier sessions called *sweep* came from ad-hoc scripts; this is that script, so a sweep can be rerun.
Each `--grid key=v1,v2` multiplies the settings tried; `--set key=v` fixes one for all of them.

    .venv/bin/python bench/hyper_sweep.py examples/honest.md --grid ridge=0.5,0.35 --grid rank=64,128 --threads 2

Fidelity is the one `bench/compile.py` and `bench/hyper.py` report (24 held-out prompts, the teacher's greedy 24-token
answers). Perplexity is over `--texts` neutral texts from the shared data (the eval's perplexity suite, same spread),
as a ratio to the bare base. Compile seconds are warm (the base's cached first-token states are kept between runs), so
they compare settings with each other, not with `bench/hyper.py`'s cold figure. Results go to
bench/results/hyper-sweep-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def perplexity(base, layer, texts: list[str]) -> float:
    from credo.eval.scorer import Row
    from credo.eval.suites.capability import perplexity as suite_perplexity

    return suite_perplexity(Row("row", "layer" if layer else "base", base, layer), texts)["perplexity"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifestos", nargs="+", type=Path)
    ap.add_argument("--grid", action="append", default=[], help="key=v1,v2,...: one run per value (several multiply)")
    ap.add_argument("--set", action="append", default=[], help="key=value for every run")
    ap.add_argument("--heldout", type=int, default=24)
    ap.add_argument("--texts", type=int, default=12, help="neutral texts for perplexity (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from credo.base import load_base
    from credo.eval.data import default_data_dir
    from credo.eval.suites.capability import neutral_texts
    from credo.layers import compile_layer
    from credo.manifesto import Manifesto
    from credo.runtime.precision import machine_header
    from credo.runtime.teacher import Runner, heldout_report

    machine, machine_line = machine_header()
    print(machine_line, flush=True)
    fixed = dict(s.split("=", 1) for s in args.set)
    axes = [(k, vs.split(",")) for k, vs in (g.split("=", 1) for g in args.grid)]
    combos = [fixed | dict(zip([k for k, _ in axes], vals)) for vals in itertools.product(*[vs for _, vs in axes])] or [fixed]
    base = load_base()
    texts = neutral_texts(default_data_dir(), args.texts) if args.texts else []
    base_ppl = perplexity(base, None, texts) if texts else math.nan
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
           "machine": machine, "machine_line": machine_line, "heldout": args.heldout, "texts": len(texts), "base_perplexity": base_ppl, "runs": []}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    for path in args.manifestos:
        m = Manifesto.from_file(path)
        for settings in combos:
            wall = time.perf_counter()
            layer = compile_layer(m, base, "hyper", settings)
            wall = time.perf_counter() - wall
            rep = heldout_report(base, m, {"hyper": Runner.for_layer(base, layer)}, args.heldout, progress=False)
            ppl = perplexity(base, layer, texts) if texts else math.nan
            run = {"manifesto": path.stem, "settings": settings, "compile_wall_s": round(wall, 2),
                   "fidelity": rep["fidelity_hyper"], "ppl_vs_base": round(ppl / base_ppl - 1, 4) if texts else None,
                   "first_token_fidelity_heldout": layer.info.report.get("first_token_fidelity_heldout")}
            out["runs"].append(run)
            print(json.dumps(run), flush=True)
            (results / f"hyper-sweep-{stamp}.json").write_text(json.dumps(out, indent=1))
            (results / f"hyper-sweep-{stamp}.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    lines = [f"# hyper sweep ({out['when']}, {out['threads']} threads, {out['heldout']} held-out prompts, "
             f"{out['texts']} neutral texts, base perplexity {out['base_perplexity']:.2f})", "", out.get("machine_line", ""), "",
             "| manifesto | settings | compile wall s (warm) | fidelity | ppl vs base |", "| --- | --- | --- | --- | --- |"]
    for r in out["runs"]:
        ppl = f"{r['ppl_vs_base']:+.1%}" if r["ppl_vs_base"] is not None else "–"
        lines.append(f"| {r['manifesto']} | {r['settings'] or 'defaults'} | {r['compile_wall_s']:.1f} | {r['fidelity']:.3f} | {ppl} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
