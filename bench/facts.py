"""`hyper` or `distill` under a grid of one setting, on the realistic sets: realistic fidelity, and where the manifesto
states facts, facts kept on the realistic fact questions and on the compile's own fact questions (the template column:
can the layer say a fact it was fitted on?); a manifesto that states none gets dashes there.

Every value of `--grid` compiles one layer; the teacher and the bare base are measured once for all of them, so the
values compare side by side on the same items. docs/tuning.md (fact_weight) has the figures this gave.

    .venv/bin/python bench/facts.py --threads 2 bench/manifestos/bikeshop.md --grid fact_weight=1,4,16 [--set k=v]
    .venv/bin/python bench/facts.py --kind distill --set budget=5m bench/manifestos/bikeshop.md --grid fact_weight=1,4

Results go to bench/results/facts-<kind>-<time>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def template_fact_items(manifesto, found) -> list:
    """Each realistic fact question asked again in the words of its clause's fitted fact questions (train split only);
    where a clause states several facts, the teacher's own ranking decides which of these count."""
    from credo.probes import probes

    fitted = [p for p in probes(manifesto, facts=True) if p.fact and not p.heldout]
    return [dataclasses.replace(item, turns=(("user", p.prompt),)) for item in found.facts for p in fitted if p.origin == item.clause]


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _count(kept: dict | None) -> str:
    """kept/teacher_gives, or a dash for a manifesto that states no fact."""
    return "–" if not kept else f"{kept['kept']}/{kept['teacher_gives']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifestos", nargs="+", type=Path)
    ap.add_argument("--kind", default="hyper", choices=("hyper", "distill"))
    ap.add_argument("--grid", required=True, help="key=v1,v2,...: one setting of the kind and the values to compare")
    ap.add_argument("--set", action="append", default=[], help="other settings of the kind, key=value")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from credo.base import load_base
    from credo.eval.realistic import Row, fact_firsts, facts_kept, figures
    from credo.layers import compile_layer
    from credo.layers.registry import teacher_layer
    from credo.manifesto import Manifesto
    from credo.realistic import load_for
    from credo.runtime.precision import machine_header

    key, values = args.grid.split("=", 1)
    quiet = {"report": "false"} if args.kind == "hyper" else {"heldout": "0", "control": "false"}  # measured here instead
    settings = quiet | dict(s.split("=", 1) for s in args.set)
    sets = {p: load_for(Manifesto.from_file(p)) for p in args.manifestos}
    missing = [str(p) for p, s in sets.items() if s is None]
    if missing:
        raise SystemExit(f"no realistic set beside: {', '.join(missing)}")
    base = load_base()
    header = machine_header()[1]
    print(header, flush=True)
    out = {"machine": header, "kind": args.kind, "grid": args.grid, "settings": settings, "rows": []}
    for path, found in sets.items():
        m = Manifesto.from_file(path)
        layers = {}
        for v in values.split(","):
            wall = time.perf_counter()
            layers[f"{key}={v}"] = compile_layer(m, base, args.kind, settings | {key: v})
            print(f"{path.stem} {key}={v}: compiled in {time.perf_counter() - wall:.1f} s", flush=True)
        fig = figures(base, m, layers, list(found.items))
        rows = {"teacher": Row("teacher", "teacher", base, teacher_layer(m, base)), "base": Row("base", "base", base)}
        rows |= {k: Row(k, "layer", base, v) for k, v in layers.items()}
        template = facts_kept(fact_firsts(rows, template_fact_items(m, found))) if found.facts else {}
        for name in layers:
            row = {"manifesto": path.stem, "value": name, "realistic": fig["fidelity"][name],
                   "fact_items": fig["by_type"].get("fact", {}).get("fidelity", {}).get(name),
                   "facts_kept": fig.get("facts", {}).get(name), "template_facts_kept": template.get(name)}
            out["rows"].append(row)
            print(f"| {path.stem} | {name} | {row['realistic']:.3f} | {_cell(row['fact_items'])} | {_count(row['facts_kept'])} | "
                  f"{_count(row['template_facts_kept'])} |", flush=True)
    dest = REPO / "bench" / "results" / f"facts-{args.kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {dest.relative_to(REPO)}")


if __name__ == "__main__":
    main()
