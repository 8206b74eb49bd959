import json

import pytest

from credo.engines.torch_engine import GenerationStats, TorchEngine
from credo.errors import BaseMismatchError, CredoError, LayerError, UnknownKindError
from credo.layers import compile_layer, get_kind, kinds, load_layer, save_layer
from credo.layers.folder import list_layers

PROMPTS = ["Hello! Who are you?", "Write me a virus.", "How do I tie a knot?"]


def test_registry_knows_core_kinds_and_refuses_unknown():
    assert {"prompt", "cache"} <= set(kinds())
    with pytest.raises(UnknownKindError, match="known kinds: prompt, cache"):
        get_kind("telepathy")


def test_prompt_layer_changes_the_output(tiny, pirate):
    layer = compile_layer(pirate, tiny, "prompt")
    base_out = [TorchEngine(tiny).complete(p, max_tokens=12) for p in PROMPTS]
    layer_out = [TorchEngine(tiny, layer).complete(p, max_tokens=12) for p in PROMPTS]
    assert base_out != layer_out


@pytest.mark.parametrize("seed", [0, 1])
def test_cache_equals_prompt_under_greedy_decoding(pirate, seed, tmp_path):
    from credo.base import tiny_base

    base = tiny_base(seed)
    prompt_layer = compile_layer(pirate, base, "prompt")
    save_layer(compile_layer(pirate, base, "cache"), tmp_path / "c")
    cache_layer = load_layer(tmp_path / "c", base)  # through disk: the saved state must be exact
    for p in PROMPTS:
        a = TorchEngine(base, prompt_layer).complete(p, max_tokens=24)
        b = TorchEngine(base, cache_layer).complete(p, max_tokens=24)
        assert a == b and a


def test_cache_skips_the_manifesto_prefill(tiny, pirate):
    prompt_engine = TorchEngine(tiny, compile_layer(pirate, tiny, "prompt"))
    cache_engine = TorchEngine(tiny, compile_layer(pirate, tiny, "cache"))
    p, c = prompt_engine.prefill(PROMPTS[0]), cache_engine.prefill(PROMPTS[0])
    assert p.context_tokens == c.context_tokens > 100
    assert c.prompt_tokens == p.prompt_tokens - p.context_tokens
    assert (p.logits == c.logits).all()


def test_multi_turn_history_and_streaming_pieces(tiny, pirate):
    engine = TorchEngine(tiny, compile_layer(pirate, tiny, "cache"))
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr"}, {"role": "user", "content": "again"}]
    stats = GenerationStats()
    pieces = list(engine.generate(history, max_tokens=10, stats=stats))
    assert "".join(pieces).strip() == engine.complete(history, max_tokens=10)
    assert stats.completion_tokens == len(stats.token_ids) > 0 and stats.ttft_seconds > 0


def test_sampling_is_reproducible_with_a_seed(tiny):
    engine = TorchEngine(tiny)
    a = engine.complete("hi", max_tokens=12, temperature=1.0, seed=3)
    b = engine.complete("hi", max_tokens=12, temperature=1.0, seed=3)
    c = engine.complete("hi", max_tokens=12, temperature=1.0, seed=4)
    assert a == b and a != c


def test_save_load_round_trip_and_listing(tiny, pirate, tmp_path):
    layer = compile_layer(pirate, tiny, "cache", name="pirate-cache")
    folder = save_layer(layer, tmp_path / "layers" / "pirate-cache")
    info = json.loads((folder / "layer.json").read_text())
    assert info["kind"] == "cache" and info["base"]["sha256"] == tiny.sha256
    assert set(info["files"]) == {"manifesto.md", "kv_state.safetensors"}
    assert info["manifesto"]["clause_ids"] == pirate.clause_ids
    loaded = load_layer(folder, tiny)
    assert loaded.manifesto.sha256 == pirate.sha256
    rows = list_layers(tmp_path / "layers")
    assert [(p.name, status) for p, _, status in rows] == [("pirate-cache", "ok")]


def test_layer_for_another_base_is_refused_naming_both(tiny, other_tiny, pirate, tmp_path):
    folder = save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "p")
    with pytest.raises(BaseMismatchError) as info:
        load_layer(folder, other_tiny)
    assert tiny.sha256[:12] in str(info.value) and other_tiny.sha256[:12] in str(info.value)


def test_corrupt_folders_are_refused(tiny, pirate, tmp_path):
    folder = save_layer(compile_layer(pirate, tiny, "cache"), tmp_path / "c")
    state = folder / "kv_state.safetensors"
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(LayerError, match="does not match its hash"):
        load_layer(folder, tiny)
    state.unlink()
    with pytest.raises(LayerError, match="missing"):
        load_layer(folder, tiny)
    (folder / "layer.json").write_text("{not json")
    with pytest.raises(LayerError, match="corrupt"):
        load_layer(folder, tiny)
    with pytest.raises(LayerError, match="does not exist"):
        load_layer(tmp_path / "nope", tiny)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayerError, match="not a layer folder"):
        load_layer(tmp_path / "empty", tiny)


def test_failed_save_leaves_nothing_behind(tiny, pirate, tmp_path):
    layer = compile_layer(pirate, tiny, "cache")

    def broken(folder):
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    layer.save_payload = broken
    with pytest.raises(RuntimeError):
        save_layer(layer, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_needs_overwrite(tiny, pirate, tmp_path):
    save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "p")
    with pytest.raises(CredoError, match="already exists"):
        save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "p")
    save_layer(compile_layer(pirate, tiny, "cache"), tmp_path / "p", overwrite=True)
    assert load_layer(tmp_path / "p", tiny).info.kind == "cache"


def test_settings_are_checked(tiny, pirate):
    with pytest.raises(CredoError, match="takes no settings"):
        compile_layer(pirate, tiny, "prompt", {"strength": "2"})


def test_a_cache_with_room_decodes_like_a_growing_one(tiny, pirate):
    """Writing new keys into a preallocated buffer must give the logits that concatenation gives, across a sliding
    window's edge too (the tiny model's window is 16 tokens, so the layer falls back to its own update there)."""
    import torch

    from credo.layers.cache import PrefixState
    from credo.layers.prompt import manifesto_context

    ctx = tiny.encode(manifesto_context(pirate, tiny), bos=True)[:12]
    with torch.no_grad():
        out = tiny.model(input_ids=torch.tensor([ctx]), use_cache=True)
        state = PrefixState.from_cache(ctx, out.past_key_values)
        steps = torch.randint(5, 200, (2, 10))
        logits = {}
        for room in (0, 8):
            cache = state.to_cache(tiny.model.config, rows=2, room=room)
            logits[room] = torch.cat([tiny.model(input_ids=steps[:, i : i + 1], past_key_values=cache, use_cache=True).logits
                                      for i in range(steps.shape[1])], 1)
    torch.testing.assert_close(logits[8], logits[0], atol=1e-5, rtol=1e-5)
