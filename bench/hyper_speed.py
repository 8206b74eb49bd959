"""Side by side: what the shared-prefix generation and the kept heap each do to a hyper compile's wall time.

Three setups, each in its own process (the heap setting holds for a whole process), run in turn `--rounds` times:
`before` (per-row copies of the manifesto's KV state, glibc's own heap), `shared` (one shared copy), `shared+heap`
(also `credo.allocator`). Each process loads the base, compiles once to warm up, then times `--repeats` cold compiles
(the base's first-token states forgotten, as `bench/hyper.py` does). Prints the medians and their ratios to `before`.

    .venv/bin/python bench/hyper_speed.py --threads 2 [examples/pirate.md]
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
SETUPS = {"before": {"shared": False, "heap": False}, "shared": {"shared": True, "heap": False}, "shared+heap": {"shared": True, "heap": True}}


def child(manifesto: str, shared: bool, repeats: int, threads: int) -> None:
    """One setup's timings, printed as a JSON line."""
    import time

    import torch

    torch.set_num_threads(threads)
    from credo.base import load_base
    from credo.engines import shared_prefix
    from credo.hyper.base_states import forget
    from credo.layers import compile_layer
    from credo.manifesto import Manifesto

    if not shared:
        shared_prefix.fits = lambda config, positions: False
    base, m = load_base(), Manifesto.from_file(manifesto)
    compile_layer(m, base, "hyper", {})
    walls = []
    for _ in range(repeats):
        forget(base)
        start = time.perf_counter()
        layer = compile_layer(m, base, "hyper", {})
        walls.append(time.perf_counter() - start)
    print(json.dumps({"walls": walls, "fidelity": layer.info.report["first_token_fidelity_heldout"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifesto", nargs="?", default=str(REPO / "examples" / "pirate.md"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.manifesto, SETUPS[args.child]["shared"], args.repeats, args.threads)
    walls: dict[str, list[float]] = {name: [] for name in SETUPS}
    looks: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, setup in SETUPS.items():
            env = os.environ | {"CREDO_KEEP_HEAP": "1" if setup["heap"] else "0"}
            cmd = [sys.executable, __file__, args.manifesto, "--child", name, "--repeats", str(args.repeats), "--threads", str(args.threads)]
            line = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            got = json.loads(line)
            walls[name] += got["walls"]
            looks[name] = got["fidelity"]
    before = statistics.median(walls["before"])
    rows = [f"# hyper compile speed, side by side ({datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
            f"{Path(args.manifesto).stem}, {args.threads} threads, {args.rounds} rounds x {args.repeats} cold compiles)", "",
            "| setup | median wall s | all | vs before | quick-look fidelity |", "| --- | --- | --- | --- | --- |"]
    for name, ws in walls.items():
        med = statistics.median(ws)
        rows.append(f"| {name} | {med:.2f} | {' '.join(f'{w:.1f}' for w in ws)} | {med / before:.2f}x | {looks[name]} |")
    text = "\n".join(rows) + "\n"
    print(text)
    out = REPO / "bench" / "results" / f"hyper-speed-{datetime.now().strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
