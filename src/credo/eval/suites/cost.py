"""Cost: what a row costs to build and to run, measured on the torch engine's own request path.

Timings are wall-clock, so they vary between runs and with machine load (everything else in the report is
deterministic); they are reported as ratios to the base measured in the same run, alternating rows per prompt so a
burst of load hits every row alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credo.runtime.torch_engine import GenerationStats
from credo.eval.scorer import payload_bytes
from credo.eval.suites.base import Group, Metrics, Suite, register

if TYPE_CHECKING:
    from credo.eval.scorer import Row

PROMPTS = ["Tell me about yourself.", "How do I make a cup of tea?", "What is the capital of Australia?"]
TOKENS = 16


@register
class Cost(Suite):
    name = "cost"
    column = "cost"
    default_items = 2
    help = "compile seconds, context tokens per request, time to first token and tokens/s, added memory"

    def run(self, rows: list[Row], group: Group | None = None) -> dict[str, Metrics]:
        prompts = PROMPTS[: self.ctx.count(self.default_items)]
        ttft = {r.name: 0.0 for r in rows}
        decode = {r.name: [0.0, 0] for r in rows}
        for prompt in prompts:
            for row in rows:  # row-minor, so load spikes are shared
                stats = GenerationStats()
                for _ in row.engine.generate(prompt, max_tokens=TOKENS, stats=stats):
                    pass
                ttft[row.name] += stats.ttft_seconds
                decode[row.name][0] += max(stats.total_seconds - stats.ttft_seconds, 1e-9)
                decode[row.name][1] += max(stats.completion_tokens - 1, 0)
        out = {}
        for row in rows:
            pre = row.engine.prefill(prompts[0])
            folder_files = row.layer.info.files if row.layer is not None and row.folder is not None else None
            out[row.name] = {
                "compile_seconds": row.compile_seconds,
                "context_tokens": pre.context_tokens,
                "ttft_seconds": ttft[row.name] / len(prompts),
                "tokens_per_second": decode[row.name][1] / decode[row.name][0] if decode[row.name][1] else None,
                "payload_bytes": payload_bytes(row.folder, folder_files),
                "context_kv_bytes": row.context_state().nbytes,
            }
        return out
