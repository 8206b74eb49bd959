"""What makes CPU generation faster must not change what it computes: one shared copy of the manifesto's KV state,
and the kept heap."""

from __future__ import annotations

import pytest
import torch

from credo.base import tiny_base
from credo.manifesto import manifesto_context
from credo.runtime import shared_prefix
from credo.runtime.teacher import Runner

PROMPTS = ["Hello! Who are you?", "How do I make tea?", "Tell me about the sea, the ships and the wind.", "Why?"]


def _generate(base, context: str, per_row: bool, monkeypatch, topk: int = 1):
    """The answers, and per prompt the final hidden state at each step (the prefill may read rows in several calls)."""
    finals: list[torch.Tensor] = []
    calls: list[list[int]] = []
    with monkeypatch.context() as patch:
        if per_row:
            patch.setattr(shared_prefix, "fits", lambda config, positions: False)
        runner = Runner(base, context, batch=4)
        runner.prefix()  # the context's own prefill, before the hook
        handle = base.model.model.norm.register_forward_hook(lambda m, i, o: finals.append(o[:, -1].clone()))
        try:
            answers = runner.generate_batch(PROMPTS, 10, topk=topk, on_step=lambda rows: calls.append(list(rows)))
        finally:
            handle.remove()
    per_prompt: list[list[torch.Tensor]] = [[] for _ in PROMPTS]
    for rows, states in zip(calls, finals, strict=True):
        for r, state in zip(rows, states):
            per_prompt[r].append(state)
    return answers, [torch.stack(f) for f in per_prompt]


def test_prompts_of_different_lengths_are_read_in_groups(pirate, monkeypatch):
    """The shared-prefix prefill reads rows in length groups (fewer padded tokens); answers and states are those of
    one wide prefill, which the per-row path still does."""
    from credo.runtime.teacher import length_groups

    assert length_groups([30, 5, 6, 31, 29], call_cost=4) == [[1, 2], [4, 0, 3]]
    assert length_groups([10, 10, 10]) == [[0, 1, 2]]
    assert sorted(sum(length_groups([7, 3, 90, 4, 50, 51], call_cost=0), [])) == list(range(6))
    base = tiny_base(0, sliding_window=4096)
    long = ["Tell me, in a good many words, about the sea, the ships, the wind, the gulls and the salt of it all.", "Why?", "Hi"]
    context = manifesto_context(pirate, base)
    monkeypatch.setattr("credo.runtime.teacher.length_groups", lambda lengths: [[1, 2], [0]])
    grouped: list[list[int]] = []
    runner = Runner(base, context, batch=4)
    answers = runner.generate_batch(long, 6, topk=2, on_step=lambda rows: grouped.append(list(rows)))
    assert grouped[:2] == [[1, 2], [0]]
    monkeypatch.setattr("credo.runtime.teacher.length_groups", lambda lengths: [list(range(len(lengths)))])
    wide = runner.generate_batch(long, 6, topk=2)
    assert [a.ids for a in answers] == [a.ids for a in wide]
    for g, w in zip(answers, wide):
        torch.testing.assert_close(g.top_logp, w.top_logp, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_shared_prefix_answers_as_the_per_row_cache(pirate, monkeypatch, kv_heads):
    """Left-padded rows of different lengths, a sliding layer and a global one, one or several kv heads: the same
    greedy tokens, top-k log-probabilities and hidden states at every step (float32)."""
    base = tiny_base(0, sliding_window=4096, kv_heads=kv_heads)
    context = manifesto_context(pirate, base)
    assert len({len(Runner(base, context).conv(p)) for p in PROMPTS}) > 1  # the batch is left-padded
    calls = []
    real = shared_prefix._attention
    monkeypatch.setitem(shared_prefix.AttentionInterface._global_mapping, shared_prefix.NAME,
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    shared, shared_finals = _generate(base, context, False, monkeypatch, topk=3)
    assert calls  # the shared path did run
    alone, alone_finals = _generate(base, context, True, monkeypatch, topk=3)
    assert [a.ids for a in shared] == [a.ids for a in alone]
    for s, a in zip(shared, alone):
        torch.testing.assert_close(s.top_logp, a.top_logp, atol=1e-4, rtol=1e-4)
    for s, a in zip(shared_finals, alone_finals):
        torch.testing.assert_close(s, a, atol=1e-4, rtol=1e-4)
    assert base.model.config._attn_implementation != shared_prefix.NAME  # restored after


def test_a_prefix_past_the_sliding_window_keeps_the_per_row_cache(tiny, pirate, monkeypatch):
    """The tiny model's window (16) is shorter than the manifesto: generation must not take the shared path."""
    context = manifesto_context(pirate, tiny)
    assert not shared_prefix.fits(tiny.model.config, len(tiny.encode(context, bos=True)))
    monkeypatch.setattr(shared_prefix, "active", lambda *a: pytest.fail("shared path taken past the window"))
    assert Runner(tiny, context, batch=4).generate_batch(PROMPTS[:2], 4, topk=1)


def test_the_kept_heap_can_be_turned_off_and_is_taken_by_glibc(monkeypatch):
    """CREDO_KEEP_HEAP=0 leaves glibc alone; otherwise glibc (where it is the C library) takes the setting."""
    import platform

    from credo import allocator

    monkeypatch.setenv("CREDO_KEEP_HEAP", "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setenv("CREDO_KEEP_HEAP", "1")
    assert allocator.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_a_cache_that_starts_empty_writes_in_place(tiny):
    """The shared-prefix rows start from an empty state: their appends must go into the buffer, not fall back to a
    concatenation at every step (an empty view's data_ptr is 0, which once sent every step down the slow path)."""
    from credo.runtime.prefix import PrefixState

    kvh, hd = tiny.model.config.num_key_value_heads, tiny.model.config.head_dim
    layers = tiny.model.config.num_hidden_layers
    empty = PrefixState([], [torch.zeros(1, kvh, 0, hd)] * layers, [torch.zeros(1, kvh, 0, hd)] * layers, [0] * layers)
    cache = empty.to_cache(tiny.model.config, rows=2, room=8)
    layer = cache.layers[0]
    for step in range(3):
        keys, values = layer.update(torch.randn(2, kvh, 1, hd), torch.randn(2, kvh, 1, hd))
        assert keys.shape[-2] == step + 1
        assert keys._base is not None and keys.untyped_storage().nbytes() == 2 * kvh * 8 * hd * 4  # the buffer's own
