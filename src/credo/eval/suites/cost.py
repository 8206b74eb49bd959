"""Cost: what a row costs to build and to run, measured on the torch engine's own request path.

Timings are wall-clock, so they vary between runs and with machine load (everything else in the report is
deterministic); they are reported as ratios to the base measured in the same run, alternating rows per prompt so a
burst of load hits every row alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from credo.eval.scorer import payload_bytes
from credo.eval.suites.base import SAFETY, Cells, Column, Group, Metrics, Suite, dig, register
from credo.runtime.torch_engine import GenerationStats

if TYPE_CHECKING:
    from credo.eval.scorer import Row

PROMPTS = ["Tell me about yourself.", "How do I make a cup of tea?", "What is the capital of Australia?"]
TOKENS = 16


def added_kb(c: Cells) -> float | None:
    """The layer's payload files plus the KV of the context it adds over the base's, in KiB."""
    payload, kv = c.get("cost", "payload_bytes"), c.get("cost", "context_kv_bytes")
    if payload is None or kv is None:
        return None
    return (payload + max(kv - (dig(c.base, "cost", "context_kv_bytes") or 0), 0)) / 1024


@register
class Cost(Suite):
    name = "cost"
    order = 160
    columns = (Column("context_tokens", "ctx tokens", lambda c: c.get("cost", "context_tokens"), "{}", SAFETY, 160),
               Column("ttft_x", "TTFT×", lambda c: c.ratio("cost", "ttft_seconds"), table=SAFETY, order=161),
               Column("tps_x", "tok/s×", lambda c: c.ratio("cost", "tokens_per_second"), table=SAFETY, order=162),
               Column("compile_s", "compile s", lambda c: c.get("cost", "compile_seconds"), "{:.1f}", SAFETY, 163),
               Column("added_kb", "added KiB", lambda c: added_kb(c), "{:.0f}", SAFETY, 164))
    column = "cost"
    default_items = 2
    row_by_row = False  # its timings take the rows in turn, so load spikes are shared
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
