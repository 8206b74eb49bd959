"""The llama.cpp engine behind the server, on the real embedded Gemma 3 270M GGUF (integration: seconds, not minutes)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")

Q = [{"role": "user", "content": "What is the capital of France?"}]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from fastapi.testclient import TestClient

    from credo.base import load_base
    from credo.server.engines.llamacpp import LlamaCppEngine
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto
    from credo.server.app import ServeSettings, create_app

    base = load_base(None)
    layers = tmp_path_factory.mktemp("layers")
    pirate = Manifesto.from_file(EXAMPLES / "pirate.md")
    for kind in ["prompt", "cache"]:
        save_layer(compile_layer(pirate, base, kind, name=f"pirate-{kind}"), layers / f"pirate-{kind}")
    save_layer(compile_layer(Manifesto.from_file(EXAMPLES / "terse.md"), base, "cache", name="terse"), layers / "terse")
    engine = LlamaCppEngine(base, n_ctx=2048)
    app = create_app(base, engine, ServeSettings(layers_dir=layers, measure_fidelity=False))
    with TestClient(app) as client:
        yield client, base, engine, layers


def answer(client, model: str, n: int = 24) -> str:
    r = client.post("/v1/chat/completions", json={"model": model, "messages": Q, "max_tokens": n, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_prompt_and_cache_answer_alike_and_unlike_the_base(served):
    client, *_ = served
    plain, prompt, cache = answer(client, "gemma-3-270m"), answer(client, "gemma-3-270m@pirate-prompt"), answer(client, "gemma-3-270m@pirate-cache")
    assert prompt == cache
    assert plain != prompt
    assert "Paris" in plain


def test_switching_never_reloads_and_never_bleeds(served):
    client, _, engine, _ = served
    llm = engine.llm
    models = ["gemma-3-270m@pirate-cache", "gemma-3-270m", "gemma-3-270m@terse", "gemma-3-270m@pirate-prompt"]
    alone = {m: answer(client, m, 16) for m in models}
    from credo.server.live import LiveServer

    results: list[tuple[str, str]] = []
    with LiveServer(client.app) as live:
        import httpx

        def hit(model: str) -> None:
            r = httpx.post(live.url + "/chat/completions", json={"model": model, "messages": Q, "max_tokens": 16, "temperature": 0, "stream": True}, timeout=120)
            text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content", "") for ln in r.text.splitlines() if ln.startswith("data: {"))
            results.append((model, text))

        threads = [threading.Thread(target=hit, args=(m,)) for m in models * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert engine.llm is llm  # the same loaded base served every identity
    assert sorted(results) == sorted((m, alone[m]) for m in models * 2)


def test_control_vector_is_mapped_and_switched_off(served, tmp_path):
    """A control.gguf next to a layer steers that identity only; the others answer exactly as before."""
    import numpy as np
    from gguf import GGUFWriter

    from credo.layers import compile_layer, save_layer
    from credo.layers.folder import relist
    from credo.manifesto import Manifesto

    client, base, engine, layers = served
    before = answer(client, "gemma-3-270m")
    folder = save_layer(compile_layer(Manifesto.from_file(EXAMPLES / "terse.md"), base, "prompt", name="steered"), layers / "steered")
    writer = GGUFWriter(str(folder / "control.gguf"), "controlvector")
    writer.add_string("controlvector.model_hint", "gemma3")
    writer.add_uint32("controlvector.layer_count", engine.n_layer)
    rng = np.random.default_rng(0)
    for il in range(1, engine.n_layer):
        writer.add_tensor(f"direction.{il}", rng.normal(0, 4.0, engine.n_embd).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    relist(folder)  # a file added by hand is served only once layer.json lists it
    r = client.post("/v1/identities", json={"name": "unsteered", "manifesto": (EXAMPLES / "terse.md").read_text(), "kind": "prompt", "wait": True})
    assert r.status_code == 201, r.text
    client.app.state.identities.add_folder("steered")
    steered, unsteered = answer(client, "gemma-3-270m@steered"), answer(client, "gemma-3-270m@unsteered")
    assert steered != unsteered
    assert answer(client, "gemma-3-270m") == before
    assert answer(client, "gemma-3-270m@steered") == steered
