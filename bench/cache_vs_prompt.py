"""Time to first token: `cache` vs `prompt`, for manifestos of about 100, 300 and 500 context tokens, in one process.

Both layers answer the same prompts on the same base, alternating, so machine noise hits both alike; the figure is the
ratio of medians. Target: cache at least 5x faster to first token at 500 tokens.

    python bench/cache_vs_prompt.py [--base tiny:0] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from credo.base import load_base
from credo.layers import compile_layer
from credo.manifesto import Manifesto, manifesto_context
from credo.runtime.torch_engine import GenerationStats, TorchEngine

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROMPTS = ["Hello! Who are you?", "How do I fix a flat bicycle tyre?", "Is a forum post a reliable source?"]


def manifesto_of(tokens: int, base) -> Manifesto:
    """A manifesto whose context is about `tokens` long, built from the example manifestos' clauses."""
    clauses = [c.text for f in sorted(EXAMPLES.glob("*.md")) for c in Manifesto.from_file(f).clauses]
    lines: list[str] = []
    i = 0
    while True:
        candidate = Manifesto.from_text("# Bench\n" + "".join(f"- {t}\n" for t in lines + [clauses[i % len(clauses)]]))
        if len(base.encode(manifesto_context(candidate, base), bos=True)) > tokens and lines:
            break
        lines.append(clauses[i % len(clauses)])
        i += 1
    return Manifesto.from_text("# Bench\n" + "".join(f"- {t}\n" for t in lines), source=f"bench-{tokens}.md")


def ttft(engine: TorchEngine, prompt: str) -> float:
    stats = GenerationStats()
    for _ in engine.generate(prompt, max_tokens=1, stats=stats):
        pass
    return stats.ttft_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="base spec (default: the embedded Gemma 3 270M)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from credo.runtime.precision import machine_header

    print(machine_header()[1])
    base = load_base(args.base)
    print(f"base {base.name} {base.short}; time to first token, median of {args.repeats} x {len(PROMPTS)} prompts")
    print(f"{'target':>8} {'context':>8} {'prompt ms':>10} {'cache ms':>9} {'speed-up':>9}")
    ok = True
    for target in (100, 300, 500):
        m = manifesto_of(target, base)
        prompt_engine = TorchEngine(base, compile_layer(m, base, "prompt"))
        cache_engine = TorchEngine(base, compile_layer(m, base, "cache"))
        ttft(prompt_engine, PROMPTS[0]), ttft(cache_engine, PROMPTS[0])  # warm-up
        p_times, c_times = [], []
        for _ in range(args.repeats):
            for prompt in PROMPTS:
                p_times.append(ttft(prompt_engine, prompt))
                c_times.append(ttft(cache_engine, prompt))
        p, c = statistics.median(p_times), statistics.median(c_times)
        n = len(cache_engine.layer.state.ids)
        print(f"{target:>8} {n:>8} {p * 1000:>10.1f} {c * 1000:>9.1f} {p / c:>8.1f}x")
        if target == 500:
            ok = p / c >= 5.0
    print(f"target (cache >= 5x faster to first token at 500 tokens): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
