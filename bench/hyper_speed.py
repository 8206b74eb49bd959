"""Side by side: what each speed change does to a hyper compile's wall time, and what the chat rows cost.

Each setup runs in its own process (the heap setting holds for a whole process), in turn, `--rounds` times:
`before` (per-row copies of the manifesto's KV state, glibc's own heap, one padded row per student sequence, no chat
rows), `shared` (one shared copy), `shared+heap` (also `credo.allocator`), `packed` (also packed student rows),
`packed+chat16` (also 16 rows of the everyday pool: 12-02's defaults), `packed-look` (also the quick look's base
and layer passes on packed rows), all in bf16 as they ran until 2026-12-03, then `fp32` and `fp32+packed-look` (the
same in float32, which `credo.runtime.precision` chooses on a CPU without fast bf16), and `fp32+grouped` (also the
teacher's prompts read in length groups, `credo.runtime.teacher.length_groups`; every other setup reads them in one
wide left-padded batch). Each process loads the base,
compiles once to warm up, then times `--repeats` cold compiles (the base's first-token states forgotten, as
`bench/hyper.py` does).
Prints the medians and their ratios to the first setup run.

    .venv/bin/python bench/hyper_speed.py --threads 2 [examples/pirate.md] [--setups before,packed,packed+chat16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUPS = {
    "before": {"shared": False, "heap": False, "packed": False, "chat_probes": 0, "precision": "bf16", "packed_look": False},
    "shared": {"shared": True, "heap": False, "packed": False, "chat_probes": 0, "precision": "bf16", "packed_look": False},
    "shared+heap": {"shared": True, "heap": True, "packed": False, "chat_probes": 0, "precision": "bf16", "packed_look": False},
    "packed": {"shared": True, "heap": True, "packed": True, "chat_probes": 0, "precision": "bf16", "packed_look": False},
    "packed+chat16": {"shared": True, "heap": True, "packed": True, "chat_probes": 16, "precision": "bf16", "packed_look": False},
    "packed-look": {"shared": True, "heap": True, "packed": True, "chat_probes": 16, "precision": "bf16", "packed_look": True},
    "fp32": {"shared": True, "heap": True, "packed": True, "chat_probes": 16, "precision": "fp32", "packed_look": False},
    "fp32+packed-look": {"shared": True, "heap": True, "packed": True, "chat_probes": 16, "precision": "fp32", "packed_look": True},
    "fp32+grouped": {"shared": True, "heap": True, "packed": True, "chat_probes": 16, "precision": "fp32", "packed_look": True, "grouped": True},
}


def one_sequence_per_row(seqs: list[list[int]], starts: list[int], pad_id: int):
    """What the student pass ran on before packing: one right-padded row per sequence, sorted by length."""
    from credo.hyper.batch import make_batch

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    where = [(0, 0)] * len(seqs)
    for row, i in enumerate(order):
        where[i] = (row, 0)
    return make_batch([seqs[i] for i in order], [starts[i] for i in order], pad_id), order, where


def padded_last_states(base, seqs: list[list[int]], pad: int):
    """What the quick look's base and layer passes ran on before packing: padded chunks of 16 rows, by length."""
    import torch

    from credo.hyper import closed_form
    from credo.hyper.batch import make_batch

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    rows = [seqs[i] for i in order]
    states = closed_form.final_states(base, make_batch(rows, [0] * len(rows), pad), torch.tensor([len(r) - 1 for r in rows]))
    return states[torch.tensor(order).argsort()]


def child(manifesto: str, setup: dict, repeats: int, threads: int) -> None:
    """One setup's timings, printed as a JSON line."""
    import time

    import torch

    torch.set_num_threads(threads)
    from credo.base import load_base
    from credo.hyper.base_states import forget
    from credo.layers import compile_layer
    from credo.layers.kinds import hyper as hyper_layer
    from credo.manifesto import Manifesto
    from credo.runtime import shared_prefix, teacher

    if not setup["shared"]:
        shared_prefix.fits = lambda config, positions: False
    if not setup["packed"]:
        hyper_layer.pack_batch = one_sequence_per_row
    if not setup.get("grouped"):
        teacher.length_groups = lambda lengths: [list(range(len(lengths)))]
    if not setup["packed_look"]:
        from credo.hyper import closed_form

        closed_form.last_states = padded_last_states
    settings = {"chat_probes": str(setup["chat_probes"])}
    base, m = load_base(), Manifesto.from_file(manifesto)
    compile_layer(m, base, "hyper", settings)
    walls, cpus = [], []
    for _ in range(repeats):
        forget(base)
        start, cpu = time.perf_counter(), time.process_time()
        layer = compile_layer(m, base, "hyper", settings)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    print(json.dumps({"walls": walls, "cpus": cpus, "fidelity": layer.info.report["first_token_fidelity_heldout"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifesto", nargs="?", default=str(REPO / "examples" / "pirate.md"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--setups", default=",".join(SETUPS), help="comma-separated, from: " + ", ".join(SETUPS))
    ap.add_argument("--child", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.manifesto, SETUPS[args.child], args.repeats, args.threads)
    import torch

    from credo.runtime.precision import machine_header

    torch.set_num_threads(args.threads)
    _, header = machine_header()
    print(header, flush=True)
    chosen = [name.strip() for name in args.setups.split(",") if name.strip()]
    if unknown := [name for name in chosen if name not in SETUPS]:
        ap.error(f"unknown setup(s) {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    walls: dict[str, list[float]] = {name: [] for name in chosen}
    cpus: dict[str, list[float]] = {name: [] for name in chosen}
    looks: dict[str, float] = {}
    for _ in range(args.rounds):
        for name in chosen:
            setup = SETUPS[name]
            env = os.environ | {"CREDO_KEEP_HEAP": "1" if setup["heap"] else "0", "CREDO_PRECISION": setup["precision"]}
            cmd = [sys.executable, __file__, args.manifesto, "--child", name, "--repeats", str(args.repeats), "--threads", str(args.threads)]
            line = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            got = json.loads(line)
            walls[name] += got["walls"]
            cpus[name] += got["cpus"]
            looks[name] = got["fidelity"]
    before, before_cpu = statistics.median(walls[chosen[0]]), statistics.median(cpus[chosen[0]])
    rows = [f"# hyper compile speed, side by side ({datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
            f"{Path(args.manifesto).stem}, {args.threads} threads, {args.rounds} rounds x {args.repeats} cold compiles)", "",
            header.replace("machine:", "Machine:", 1), "",
            f"| setup | precision | median wall s | all | vs {chosen[0]} | median CPU s | CPU vs {chosen[0]} | quick-look fidelity |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, ws in walls.items():
        med = statistics.median(ws)
        cpu = statistics.median(cpus[name])
        rows.append(f"| {name} | {SETUPS[name]['precision']} | {med:.2f} | {' '.join(f'{w:.1f}' for w in ws)} | {med / before:.2f}x | {cpu:.1f} | "
                    f"{cpu / before_cpu:.2f}x | {looks[name]} |")
    text = "\n".join(rows) + "\n"
    print(text)
    out = REPO / "bench" / "results" / f"hyper-speed-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
