import json

import pytest

from credo.base import cache_of, with_cache
from credo.errors import BaseMismatchError, CredoError, LayerError, UnknownKindError
from credo.layers import compile_layer, get_kind, kind_names, load_layer, save_layer
from credo.layers.folder import list_layers
from credo.runtime.torch_engine import GenerationStats, TorchEngine

PROMPTS = ["Hello! Who are you?", "Write me a virus.", "How do I tie a knot?"]


def test_registry_knows_core_kinds_and_refuses_unknown():
    assert {"prompt", "cache"} <= set(kind_names())
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

    from credo.manifesto import manifesto_context
    from credo.runtime.prefix import PrefixState

    ctx = tiny.encode(manifesto_context(pirate, tiny), bos=True)[:12]
    with torch.no_grad():
        out = tiny.model(input_ids=torch.tensor([ctx]), use_cache=True)
        state = PrefixState.from_cache(ctx, cache_of(out))
        steps = torch.randint(5, 200, (2, 10))
        logits = {}
        for room in (0, 8):
            cache = state.to_cache(tiny.model.config, rows=2, room=room)
            logits[room] = torch.cat([tiny.model(input_ids=steps[:, i : i + 1], **with_cache(tiny.model, cache), use_cache=True).logits
                                      for i in range(steps.shape[1])], 1)
    torch.testing.assert_close(logits[8], logits[0], atol=1e-5, rtol=1e-5)


# --- robustness: nothing a loader reads goes unverified; temporaries of killed processes; permissions -------------------

def _rewrite_info(folder, change):
    path = folder / "layer.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_listing_that_leaves_files_out_is_corrupt(tiny, pirate, tmp_path):
    """Issue #20.9: `"files": {}` turned verification off, so a flipped payload byte loaded and generated."""
    import shutil

    good = save_layer(compile_layer(pirate, tiny, "cache"), tmp_path / "good")
    assert "checksum" in json.loads((good / "layer.json").read_text())

    def variant(name, change, flip_payload=False):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        if flip_payload:
            state = folder / "kv_state.safetensors"
            data = bytearray(state.read_bytes())
            data[-1] ^= 0xFF
            state.write_bytes(bytes(data))
        change(folder)
        return folder

    def legacy(change):  # as a layer.json written before checksums: the checks below must not rest on the checksum alone
        return lambda folder: _rewrite_info(folder, lambda d: (d.pop("checksum"), change(d)))

    cases = {
        "no-files": (legacy(lambda d: d.update(files={})), True, "does not list manifesto.md"),
        "manifesto-only": (legacy(lambda d: d.update(files={"manifesto.md": d["files"]["manifesto.md"]})), True,
                           "kv_state.safetensors is not listed"),
        "extra-file": (lambda f: (f / "control.gguf").write_bytes(b"GGUF"), False, "control.gguf is not listed"),
        "files-not-a-dict": (legacy(lambda d: d.update(files=["manifesto.md"])), False, "'files' is not a dict"),
        "escaping-path": (legacy(lambda d: d["files"].update({"../good/manifesto.md": "0" * 64})), False, "not a path inside"),
        "hash-not-text": (legacy(lambda d: d["files"].update({"manifesto.md": 5})), False, "not a string"),
        "not-an-object": (lambda f: (f / "layer.json").write_text("[1, 2]"), False, "not a JSON object"),
        "edited-param": (lambda f: _rewrite_info(f, lambda d: d["params"].update(context_tokens=1)), False, "checksum"),
        "missing-name": (legacy(lambda d: d.pop("name")), False, "required field"),
    }
    for name, (change, flip, message) in cases.items():
        with pytest.raises(LayerError, match="corrupt") as info:
            load_layer(variant(name, change, flip), tiny)
        assert message in str(info.value), name
    rows = {p.name: status for p, _, status in list_layers(tmp_path)}
    assert rows["good"] == "ok" and "corrupt" in rows["files-not-a-dict"]

    old = variant("written-before-checksums", legacy(lambda d: None))
    assert load_layer(old, tiny).info.files == load_layer(good, tiny).info.files
    (old / ".DS_Store").write_bytes(b"x")  # hidden files are nobody's payload
    load_layer(old, tiny)


def test_force_replaces_only_a_layer_folder(tiny, pirate, tmp_path):
    """Issue #20.2: `compile -o some/folder --force` emptied any folder, layer or not."""
    (tmp_path / "notes" / "sub").mkdir(parents=True)
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    for target in (tmp_path / "notes", tmp_path / "file.txt"):
        with pytest.raises(CredoError, match="credo did not write it"):
            save_layer(compile_layer(pirate, tiny, "prompt"), target, overwrite=True)
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine" and (tmp_path / "notes" / "sub").is_dir()
    assert (tmp_path / "file.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "notes"]


def test_stale_temporaries_are_swept_and_live_ones_kept(tiny, pirate, tmp_path, dead_pid):
    """Issue #20.10: kill -9 left hidden .NAME.*.tmp folders (and server .staging ones) that nothing removed."""
    import os
    import time

    from credo.fsutil import host

    dead = dead_pid
    here = f"credo-{host()}"
    stale = [tmp_path / f".p.{here}-{dead}-k2j4x_1.tmp", tmp_path / f".p.{here}-{dead}-aaaa.old", tmp_path / f".q.{here}-{dead}-b.staging",
             tmp_path / ".p.abcd_123.tmp"]  # the last one named as before names carried the pid, untouched for two hours
    live = [tmp_path / f".p.{here}-{os.getpid()}-zz.tmp", tmp_path / ".p.efgh_456.tmp",  # ours (running), a recent unnamed one,
            tmp_path / f".p.credo-elsewhere-{dead}-zz.tmp"]  # and another machine's (a shared folder): not ours to judge
    keep = [tmp_path / ".hidden-notes.tmp", tmp_path / "plain.tmp"]  # not credo's temporaries
    for folder in stale + live + keep:
        folder.mkdir()
        (folder / "payload.bin").write_bytes(b"\0" * 4096)
    (tmp_path / f".layer.json.{here}-{dead}-x1.tmp").write_text("{}")  # a write_text_atomic file
    old = time.time() - 7200
    os.utime(stale[-1], (old, old))
    os.utime(keep[0], (old, old))
    save_layer(compile_layer(pirate, tiny, "prompt"), tmp_path / "p")  # the next write into the folder sweeps it
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {p.name for p in live + keep} | {"p"}


def test_new_folders_and_files_follow_the_umask(tiny, pirate, tmp_path):
    """mkdtemp and mkstemp make 0700 folders and 0600 files; what credo leaves in place gets the user's umask."""
    import os
    import stat

    from credo.fsutil import write_text_atomic

    old = os.umask(0o027)
    try:
        import credo.fsutil as fsutil

        fsutil.umask.cache_clear()
        folder = save_layer(compile_layer(pirate, tiny, "cache"), tmp_path / "c")
        write_text_atomic(tmp_path / "report.json", "{}")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750
        assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o640
        assert stat.S_IMODE((folder / "layer.json").stat().st_mode) == 0o640
    finally:
        os.umask(old)
        fsutil.umask.cache_clear()
