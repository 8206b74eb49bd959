"""`credo serve` on the tiny base through the torch engine: the API, the official openai client, identity management,
isolation between identities, and every way a request can be malformed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from credo.base import tiny_base  # noqa: E402
from credo.errors import CredoError  # noqa: E402
from credo.layers.folder import load_layer  # noqa: E402
from credo.runtime.torch_engine import TorchEngine  # noqa: E402
from credo.server.app import ServeSettings, create_app  # noqa: E402
from credo.server.cli import check_exposure  # noqa: E402
from credo.server.engines.torch import TorchServeEngine  # noqa: E402
from credo.server.live import LiveServer  # noqa: E402

PIRATE = """---
name: pirate
---
# Voice
- Speak like a pirate, always.
- Call the user matey.
"""

MONK = """---
name: monk
---
# Voice
- Answer in one calm sentence.
- Never raise your voice.
"""


def compile_into(layers: Path, base, text: str, name: str, kind: str = "prompt") -> Path:
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto

    layer = compile_layer(Manifesto.from_bytes(text.encode(), source=f"{name}.md"), base, kind, name=name)
    return save_layer(layer, layers / name)


Q = [{"role": "user", "content": "Hello there, who are you?"}]


@pytest.fixture(scope="module")
def base():
    return tiny_base(0, sliding_window=1024)  # a window wider than the prompt, so every layer reads the manifesto


@pytest.fixture(scope="module")
def served(base, tmp_path_factory):
    layers = tmp_path_factory.mktemp("layers")
    compile_into(layers, base, PIRATE, "pirate")
    compile_into(layers, base, MONK, "monk", kind="cache")
    settings = ServeSettings(layers_dir=layers, max_tokens_limit=64, default_max_tokens=12, max_body_bytes=64 * 1024, measure_fidelity=False)
    app = create_app(base, TorchServeEngine(base), settings)
    with TestClient(app) as client:
        yield client, layers


def chat(client, model, messages=Q, **kw):
    body = {"model": model, "messages": messages, "max_tokens": 12, "temperature": 0} | kw
    return client.post("/v1/chat/completions", json=body)


def direct(base, layers: Path | None, name: str | None, max_tokens: int = 12) -> str:
    """The same answer computed without the server: the reference every served answer is checked against."""
    layer = load_layer(layers / name, base) if name else None
    return TorchEngine(base, layer).complete(Q, max_tokens=max_tokens, temperature=0.0).strip()


def test_models_lists_base_and_identities(served, base):
    client, _ = served
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["tiny-0", "tiny-0@monk", "tiny-0@pirate"]
    assert client.get("/v1/models/tiny-0@pirate").json()["credo"]["kind"] == "prompt"


@pytest.mark.parametrize("name", [None, "pirate", "monk"])
def test_chat_matches_a_direct_run(served, base, name):
    client, layers = served
    r = chat(client, "tiny-0" + (f"@{name}" if name else ""))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == direct(base, layers, name)
    assert body["usage"]["completion_tokens"] >= 1


def test_identities_answer_differently(served):
    client, _ = served
    answers = {m: chat(client, m).json()["choices"][0]["message"]["content"] for m in ["tiny-0", "tiny-0@pirate", "tiny-0@monk"]}
    assert len(set(answers.values())) == 3, answers


def test_streaming_chat_equals_non_streaming(served):
    client, _ = served
    whole = chat(client, "tiny-0@pirate").json()["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json={"model": "tiny-0@pirate", "messages": Q, "max_tokens": 12, "temperature": 0, "stream": True,
                                                             "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    assert chunks[-2]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_completions_and_stop(served, base):
    client, _ = served
    r = client.post("/v1/completions", json={"model": "tiny-0", "prompt": "Once upon", "max_tokens": 10, "temperature": 0})
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["text"]
    expected = base.decode(_greedy(base, "Once upon", 10))
    assert text == expected
    stop = text[3:5]
    r = client.post("/v1/completions", json={"model": "tiny-0", "prompt": "Once upon", "max_tokens": 10, "temperature": 0, "stop": stop})
    cut = r.json()["choices"][0]
    assert cut["text"] == text[: text.find(stop)] and cut["finish_reason"] == "stop"


def _greedy(base, text: str, n: int) -> list[int]:
    import torch

    ids = base.encode(text, bos=True)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(base.model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in base.stop_ids:
                break
            out.append(nxt)
    return out


def test_openai_client_works_unchanged(served, base):
    openai = pytest.importorskip("openai")
    client, layers = served
    with LiveServer(client.app) as live:
        oc = openai.OpenAI(base_url=live.url, api_key="unused", max_retries=0)
        assert {m.id for m in oc.models.list()} == {"tiny-0", "tiny-0@pirate", "tiny-0@monk"}
        r = oc.chat.completions.create(model="tiny-0@pirate", messages=Q, max_tokens=12, temperature=0)
        assert r.choices[0].message.content == direct(base, layers, "pirate")
        chunks = oc.chat.completions.create(model="tiny-0@pirate", messages=Q, max_tokens=12, temperature=0, stream=True)
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert "".join(pieces) == r.choices[0].message.content
        c = oc.completions.create(model="tiny-0", prompt="Once upon", max_tokens=5, temperature=0)
        assert c.choices[0].text == base.decode(_greedy(base, "Once upon", 5))
        with pytest.raises(openai.NotFoundError):
            oc.chat.completions.create(model="tiny-0@nobody", messages=Q, max_tokens=4)
        with pytest.raises(openai.BadRequestError):
            oc.chat.completions.create(model="tiny-0", messages=Q, max_tokens=100000)


def test_interleaved_requests_do_not_bleed(served, base):
    client, layers = served
    expected = {m: chat(client, m).json()["choices"][0]["message"]["content"] for m in ["tiny-0", "tiny-0@pirate", "tiny-0@monk"]}
    results: list[tuple[str, str]] = []
    with LiveServer(client.app) as live:
        import httpx

        def hit(model: str) -> None:
            r = httpx.post(live.url + "/chat/completions", json={"model": model, "messages": Q, "max_tokens": 12, "temperature": 0, "stream": True}, timeout=60)
            text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content", "") for ln in r.text.splitlines() if ln.startswith("data: {"))
            results.append((model, text))

        threads = [threading.Thread(target=hit, args=(m,)) for m in ["tiny-0@pirate", "tiny-0@monk", "tiny-0", "tiny-0@monk", "tiny-0@pirate", "tiny-0"] * 2]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 12
    for model, text in results:
        assert text == expected[model], model


def test_identity_lifecycle(served, base):
    client, layers = served
    r = client.post("/v1/identities", json={"name": "sage", "manifesto": MONK.replace("monk", "sage"), "kind": "prompt", "wait": True})
    assert r.status_code == 201, r.text
    assert (layers / "sage" / "layer.json").is_file() and r.json()["model"] == "tiny-0@sage"
    first = chat(client, "tiny-0@sage").json()["choices"][0]["message"]["content"]
    assert first == direct(base, layers, "sage")
    assert client.post("/v1/identities", json={"name": "sage", "manifesto": PIRATE, "wait": True}).status_code == 409
    r = client.post("/v1/identities", json={"name": "sage", "manifesto": PIRATE, "kind": "cache", "overwrite": True})
    assert r.status_code == 202
    job = r.json()["id"]
    import time

    for _ in range(200):
        state = client.get(f"/v1/jobs/{job}").json()
        if state["stage"] in {"ready", "error"}:
            break
        time.sleep(0.05)
    assert state["stage"] == "ready", state
    assert client.get("/v1/identities/sage").json()["kind"] == "cache"
    again = chat(client, "tiny-0@sage").json()["choices"][0]["message"]["content"]
    assert again == direct(base, layers, "sage") == direct(base, layers, "pirate")
    assert client.delete("/v1/identities/sage").status_code == 200
    assert not (layers / "sage").exists()
    assert chat(client, "tiny-0@sage").status_code == 404
    assert client.delete("/v1/identities/sage").status_code == 404


@pytest.mark.parametrize(
    "body,status",
    [
        ({"model": "tiny-0"}, 400),
        ({"model": "tiny-0", "messages": []}, 400),
        ({"model": "tiny-0", "messages": "hi"}, 400),
        ({"model": "tiny-0", "messages": [{"role": "robot", "content": "x"}]}, 400),
        ({"model": "tiny-0", "messages": Q, "max_tokens": 65}, 400),
        ({"model": "tiny-0", "messages": Q, "max_tokens": 0}, 400),
        ({"model": "tiny-0", "messages": Q, "temperature": -1}, 400),
        ({"model": "tiny-0", "messages": Q, "n": 2}, 400),
        ({"model": "tiny-0", "messages": Q, "stop": ["a", "b", "c", "d", "e"]}, 400),
        ({"model": "other", "messages": Q}, 404),
        ({"model": "tiny-0@../pirate", "messages": Q}, 404),
        ({"model": "tiny-0@ghost", "messages": Q}, 404),
        ([1, 2, 3], 400),
    ],
)
def test_malformed_chat_requests_get_a_json_4xx(served, body, status):
    client, _ = served
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_garbage_and_oversized_bodies(served):
    client, _ = served
    for raw in [b"{not json", b"\xff\xfe\x00", b""]:
        r = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "error" in r.json()
    big = {"model": "tiny-0", "messages": [{"role": "user", "content": "x" * 70_000}]}
    r = client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    assert client.get("/v1/nowhere").status_code == 404
    assert client.get("/v1/nowhere").json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    "body,status",
    [
        ({"name": "../escape", "manifesto": PIRATE}, 400),
        ({"name": "a/b", "manifesto": PIRATE}, 400),
        ({"name": ".hidden", "manifesto": PIRATE}, 400),
        ({"name": "Upper", "manifesto": PIRATE}, 400),
        ({"name": "ok", "manifesto": PIRATE, "kind": "nonsense"}, 400),
        ({"name": "ok", "manifesto": PIRATE, "kind": "prompt", "settings": {"x": 1}}, 400),
        ({"name": "ok", "manifesto": "   "}, 400),
        ({"name": "pirate", "manifesto": PIRATE}, 409),
    ],
)
def test_bad_identity_requests_change_nothing(served, body, status):
    client, layers = served
    before = sorted(p.name for p in layers.parent.rglob("*"))
    r = client.post("/v1/identities", json=body | {"wait": True})
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]
    assert sorted(p.name for p in layers.parent.rglob("*")) == before


def test_delete_cannot_escape(served):
    client, layers = served
    outside = layers.parent / "victim"
    outside.mkdir(exist_ok=True)
    for name in ["..", "%2e%2e", "..%2Fvictim", "UP"]:
        r = client.delete(f"/v1/identities/{name}")
        assert r.status_code in {400, 404}, (name, r.text)
    assert outside.is_dir() and (layers / "pirate").is_dir()


def test_api_key_and_exposure(base, tmp_path):
    app = create_app(base, TorchServeEngine(base), ServeSettings(layers_dir=tmp_path, api_key="s3cret", measure_fidelity=False))
    with TestClient(app) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/").status_code == 200  # the page itself holds nothing secret
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    with pytest.raises(CredoError, match="--api-key"):
        check_exposure("0.0.0.0", None)
    check_exposure("0.0.0.0", "key")


def test_unreadable_layer_is_listed_not_served(base, tmp_path):
    compile_into(tmp_path, base, PIRATE, "pirate")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "layer.json").write_text("{oops")
    app = create_app(base, TorchServeEngine(base), ServeSettings(layers_dir=tmp_path, measure_fidelity=False))
    with TestClient(app) as client:
        rows = {r["name"]: r for r in client.get("/v1/identities").json()["data"]}
        assert rows["broken"]["status"] == "error" and "corrupt" in rows["broken"]["error"]
        assert chat(client, "tiny-4@broken").status_code == 404
        assert chat(client, "tiny-0@broken").status_code == 400
        assert chat(client, "tiny-0@pirate").status_code == 200


# --- robustness: abandoned requests, deadlines, names, JSON errors, leftovers -----------------------------------------

class SpyEngine(TorchServeEngine):
    """The torch engine, keeping each generation's stats so a test can see how far a generation went."""

    def __init__(self, base, **kw):
        super().__init__(base, **kw)
        self.runs: list = []

    def stream(self, key, prompt, sampling, stats, cancel):
        self.runs.append(stats)
        yield from super().stream(key, prompt, sampling, stats, cancel)


def _wait_for(predicate, seconds: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_gives_up_stops_its_generation(base, tmp_path):
    """Issue #20.4: a non-streaming client that leaves after 0.5 s used to keep the only worker generating all its tokens."""
    import httpx

    engine = SpyEngine(base)
    settings = ServeSettings(layers_dir=tmp_path, max_tokens_limit=3000, measure_fidelity=False)
    app = create_app(base, engine, settings)
    long = {"model": "tiny-0", "prompt": "Once upon", "max_tokens": 3000, "temperature": 0}  # ~10 s of tokens on the tiny base
    with LiveServer(app) as live:
        health = lambda: httpx.get(live.root + "/health", timeout=10).json()["requests"]  # noqa: E731
        with pytest.raises(httpx.TimeoutException):
            httpx.post(live.url + "/completions", json=long, timeout=0.5)
        assert _wait_for(lambda: health()["cancelled"] == 1), health()
        first = engine.runs[0]
        assert 0 < first.completion_tokens < 3000  # stopped where the client left, not at max_tokens

        with httpx.stream("POST", live.url + "/completions", json=long | {"stream": True}, timeout=30) as r:
            next(r.iter_lines())  # the first token arrived; now leave
        assert _wait_for(lambda: health()["cancelled"] == 2), health()
        assert 0 < engine.runs[1].completion_tokens < 3000

        r = httpx.post(live.url + "/completions", json=long | {"max_tokens": 5}, timeout=30)  # the worker is free again
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
        assert health() == {"generations": 3, "cancelled": 2, "timed_out": 0}


def test_a_request_stops_at_its_time_limit(base, tmp_path):
    engine = SpyEngine(base)
    settings = ServeSettings(layers_dir=tmp_path, max_tokens_limit=3000, measure_fidelity=False, max_request_seconds=0.5)
    with TestClient(create_app(base, engine, settings)) as client:
        r = client.post("/v1/completions", json={"model": "tiny-0", "prompt": "Once upon", "max_tokens": 3000, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["finish_reason"] == "length" and 0 < body["usage"]["completion_tokens"] < 3000
        assert client.get("/health").json()["requests"]["timed_out"] == 1


def test_a_request_queued_past_its_time_limit_is_refused_as_busy():
    import asyncio
    import threading
    import time

    from credo.server.worker import ServerBusy, Worker

    worker, release = Worker(), threading.Event()
    worker._jobs.put(release.wait)  # the worker is busy with something long

    async def run() -> None:
        stream = worker.stream(lambda stop: iter(["never"]), deadline=time.monotonic() + 0.05)
        await asyncio.sleep(0.2)
        release.set()
        with pytest.raises(ServerBusy):
            await stream.first()

    asyncio.run(run())
    worker.stop()


@pytest.mark.parametrize("name", ["x\n", "pirate\n", "a\nb", "ok\r\n"])
def test_identity_names_must_match_whole(served, name):
    """Issue #20.7: `$` matched before a trailing newline, so "x\\n" was accepted and then broke `credo layers ls`."""
    client, layers = served
    r = client.post("/v1/identities", json={"name": name, "manifesto": PIRATE, "wait": True})
    assert r.status_code == 400, r.text
    assert "not allowed" in r.json()["error"]["message"]
    assert not any("\n" in p.name or "\r" in p.name for p in layers.iterdir())


def test_malformed_json_names_the_place_in_words(served):
    client, _ = served
    r = client.post("/v1/chat/completions", content=b'{"model": "tiny-0",\n "messages": oops}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"] == "request body is not valid JSON: Expecting value at line 2, column 14" and error["param"] is None


def test_overwrite_replaces_only_a_layer_folder(served):
    client, layers = served
    (layers / "notes").mkdir()
    (layers / "notes" / "mine.txt").write_text("keep me")
    r = client.post("/v1/identities", json={"name": "notes", "manifesto": PIRATE, "overwrite": True, "wait": True})
    assert r.status_code == 409 and "did not write it" in r.json()["error"]["message"]
    assert (layers / "notes" / "mine.txt").read_text() == "keep me"


def test_server_start_sweeps_what_a_killed_compile_left(base, tmp_path, dead_pid):
    """Issue #20.10: kill -9 left hidden staging folders that nothing removed; those of a live process stay."""
    import os

    dead = dead_pid
    compile_into(tmp_path, base, PIRATE, "pirate")
    from credo.fsutil import host

    stale = [tmp_path / f".pirate.credo-{host()}-{dead}-abc123.staging", tmp_path / f".pirate.credo-{host()}-{dead}-def456.tmp"]
    live = tmp_path / f".monk.credo-{host()}-{os.getpid()}-xyz789.staging"
    for folder in stale + [live]:
        (folder / "layer").mkdir(parents=True)
        (folder / "layer" / "big.bin").write_bytes(b"\0" * 1024)
    with TestClient(create_app(base, TorchServeEngine(base), ServeSettings(layers_dir=tmp_path, measure_fidelity=False))) as client:
        assert client.get("/v1/models").status_code == 200
    assert not any(p.exists() for p in stale) and live.is_dir()
    assert (tmp_path / "pirate" / "layer.json").is_file()
