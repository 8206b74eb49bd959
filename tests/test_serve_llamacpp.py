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
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto
    from credo.server.app import ServeSettings, create_app
    from credo.server.engines.llamacpp import LlamaCppEngine

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
            body = {"model": model, "messages": Q, "max_tokens": 16, "temperature": 0, "stream": True}
            r = httpx.post(live.url + "/chat/completions", json=body, timeout=120)
            text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content", "") for ln in r.text.splitlines() if ln.startswith("data: {"))
            results.append((model, text))

        threads = [threading.Thread(target=hit, args=(m,)) for m in models * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert engine.llm is llm  # the same loaded base served every identity
    assert sorted(results) == sorted((m, alone[m]) for m in models * 2)


def steer_layer(base, name: str, control):
    """A steer layer around given vectors (compiling one on the real base takes minutes); the terse prompt lends its info."""
    import dataclasses

    from credo.layers import compile_layer
    from credo.layers.kinds.steer import SteerLayer
    from credo.manifesto import Manifesto

    shell = compile_layer(Manifesto.from_file(EXAMPLES / "terse.md"), base, "prompt", name=name)
    params = {"layers": sorted(control.vectors), "strength": control.strength, "gguf_arch": "gemma3"}
    return SteerLayer(dataclasses.replace(shell.info, kind="steer", params=params), shell.manifesto, control)


def random_control(engine, seed: int, strength: float = 1.0):
    import numpy as np
    import torch

    from credo.layers.control import ControlVector

    rng = np.random.default_rng(seed)
    return ControlVector({il: torch.from_numpy(rng.normal(0, 4.0, engine.n_embd).astype(np.float32)) for il in range(1, engine.n_layer)}, strength)


def test_control_vector_is_mapped_and_switched_off(served):
    """A steer layer's control vector steers that identity only; the others answer exactly as before."""
    from credo.layers import save_layer

    client, base, engine, layers = served
    before = answer(client, "gemma-3-270m")
    r = client.post("/v1/identities", json={"name": "unsteered", "manifesto": (EXAMPLES / "terse.md").read_text(), "kind": "prompt", "wait": True})
    assert r.status_code == 201, r.text
    unsteered = answer(client, "gemma-3-270m@unsteered")
    save_layer(steer_layer(base, "steered", random_control(engine, 0)), layers / "steered")
    client.app.state.identities.add_folder("steered")
    steered = answer(client, "gemma-3-270m@steered")
    assert steered != before
    assert answer(client, "gemma-3-270m") == before
    assert answer(client, "gemma-3-270m@unsteered") == unsteered
    assert answer(client, "gemma-3-270m@steered") == steered


def test_a_stack_serves_the_sum_of_its_control_vectors(served):
    """Two steer layers stacked serve as one vector, their scaled sum: the same the stack writes as its control.gguf."""
    import dataclasses

    import torch

    from credo.layers import load_layer, save_layer
    from credo.layers.control import ControlVector
    from credo.layers.kinds.stack import StackLayer
    from credo.server.engines.llamacpp import carried

    client, base, engine, layers = served
    lower, upper = steer_layer(base, "low", random_control(engine, 1, 0.5)), steer_layer(base, "up", random_control(engine, 2, 1.5))
    info = dataclasses.replace(upper.info, kind="stack", name="stacked", params={"chain": ["steer", "steer"]}, files={})
    save_layer(StackLayer(info, upper.manifesto, lower, upper), layers / "stacked")
    client.app.state.identities.add_folder("stacked")
    _, controls, unservable = carried(load_layer(layers / "stacked", base))
    assert not unservable and len(controls) == 2
    written = ControlVector.from_gguf(layers / "stacked" / ControlVector.GGUF_FILE)
    combined = ControlVector.combined(controls)
    assert set(written.vectors) == set(combined.vectors) and all(torch.equal(written.vectors[il], v) for il, v in combined.vectors.items())
    save_layer(steer_layer(base, "summed", ControlVector(written.vectors, 1.0)), layers / "summed")
    client.app.state.identities.add_folder("summed")
    assert answer(client, "gemma-3-270m@stacked") == answer(client, "gemma-3-270m@summed") != answer(client, "gemma-3-270m")

