"""The long run of the robustness harness: the fuzz and property tests with many random examples, then the kill tests
again and again at fresh random kill points. `make test` runs the same tests, bounded and derandomized; this is where
the next bad input should be found first.

    .venv/bin/python bench/fuzz_soak.py [--rounds 20] [--fuzz-only | --kill-only]

It prints each round's seed; a failing kill round is replayed with CREDO_KILL_SEED=SEED, a failing fuzz example is
printed by hypothesis as the smallest input that fails. Allow about 15 minutes for the defaults on two cores.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def pytest(args: list[str], env: dict[str, str]) -> int:
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *args], cwd=REPO, env=os.environ | env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="Kill-test rounds, each at new random kill points.")
    parser.add_argument("--fuzz-only", action="store_true")
    parser.add_argument("--kill-only", action="store_true")
    args = parser.parse_args()
    failures = 0
    start = time.perf_counter()
    if not args.kill_only:
        print("fuzz and property tests, profile 'soak' (random, 50x the examples of make test)", flush=True)
        failures += pytest(["tests/test_fuzz.py"], {"CREDO_FUZZ_PROFILE": "soak"}) != 0
    if not args.fuzz_only:
        for i in range(args.rounds):
            seed = random.SystemRandom().randrange(1 << 30)
            print(f"kill round {i + 1}/{args.rounds}: CREDO_KILL_SEED={seed}", flush=True)
            if pytest(["tests/test_kill.py"], {"CREDO_KILL_SEED": str(seed)}) != 0:
                failures += 1
                print(f"  failed: replay with CREDO_KILL_SEED={seed} .venv/bin/python -m pytest tests/test_kill.py", flush=True)
    print(f"{'all passed' if not failures else f'{failures} run(s) failed'} in {time.perf_counter() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
