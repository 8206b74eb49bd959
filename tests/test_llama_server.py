"""A layer's `lora.gguf` served by llama.cpp's own llama-server with per-request LoRA scales (#25), as docs/serving.md
says to serve it: every adapter loaded at scale 0, each request naming every adapter with its scale.

llama-server is built by `make llama-server` (scripts/build-llama-server.sh) from the llama.cpp that the installed
llama-cpp-python vendors, so its greedy answers are compared token for token with llama-cpp-python's on the same GGUFs.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time
from pathlib import Path

import httpx
import llama_cpp
import numpy as np
import pytest
import torch

from credo.base import Base, tiny_base
from credo.layers.lora import DEFAULT_TARGETS, LoraWeights
from credo.server.live import free_port
from credo.tiny_gguf import tiny_gguf

pytestmark = pytest.mark.usefixtures("isolated_work", "one_thread")

SERVER = Path(sys.executable).parent / "llama-server"  # where `make llama-server` installs it: beside the venv's python
PROMPT = "Who are you?"
TOKENS = 8  # greedy tokens per answer: enough for two random adapters and the bare base to part ways
N_CTX = 128
A, B = 0, 1  # adapter ids: the order of --lora-scaled


def random_lora(base: Base, seed: int) -> LoraWeights:
    """As tests/test_families_llamacpp.py makes them: B as large as A, so greedy tokens move."""
    weights = LoraWeights.init(base.model, r=4, targets=DEFAULT_TARGETS, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in weights.modules:
        weights.b[m] = 0.5 * torch.randn(weights.b[m].shape, generator=gen)
    return weights


@pytest.fixture(scope="module")
def setup(isolated_work, tmp_path_factory):
    """(base, its GGUF, [a.gguf, b.gguf]) on the tiny Llama: its q/k rows are reordered in lora.gguf, the case most
    likely to go wrong in another loader."""
    base = tiny_base(0, family="llama")
    folder = tmp_path_factory.mktemp("adapters")
    adapters = [folder / "a.gguf", folder / "b.gguf"]
    for path, seed in zip(adapters, (1, 7)):
        random_lora(base, seed).to_gguf(path)
    return base, tiny_gguf(base), adapters


def built() -> Path:
    """The binary, or a failure (not a skip: `make test` builds it first)."""
    if not SERVER.is_file():
        pytest.fail(f"{SERVER} is missing: run `make llama-server`", pytrace=False)
    return SERVER


@pytest.fixture(scope="module")
def server(setup, tmp_path_factory):
    """llama-server on a free port with both adapters at scale 0, one thread, a small context and one slot."""
    built()
    _, gguf, (a, b) = setup
    port, log = free_port(), tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [str(SERVER), "-m", str(gguf), "--lora-scaled", f"{a}:0", "--lora-scaled", f"{b}:0", "--host", "127.0.0.1",
           "--port", str(port), "-t", "1", "-tb", "1", "-c", str(N_CTX), "-np", "1", "-fa", "off", "--no-warmup"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama-server did not come up: {log.read_text()[-1500:]}", pytrace=False)
            time.sleep(0.1)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def prompt_ids(base: Base) -> list[int]:
    return base.encode(PROMPT, bos=True)


def served(client: httpx.Client, base: Base, lora: list[dict] | None) -> list[int]:
    """The server's greedy tokens for the prompt (as ids, so no tokenizer stands between the two sides); `lora` None
    sends no `lora` field."""
    body = {"prompt": prompt_ids(base), "n_predict": TOKENS, "temperature": 0.0, "ignore_eos": True, "return_tokens": True,
            "cache_prompt": False}
    if lora is not None:
        body["lora"] = lora
    r = client.post("/completion", json=body)
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert len(tokens) == TOKENS
    return tokens


@pytest.fixture(scope="module")
def reference(setup) -> dict[tuple[float, float], list[int]]:
    """llama-cpp-python's greedy tokens for each pair of scales (A, B): the answers the server must give."""
    base, gguf, adapters = setup
    llm = llama_cpp.Llama(str(gguf), n_ctx=N_CTX, n_threads=1, logits_all=True, verbose=False)
    loaded = [llama_cpp.llama_adapter_lora_init(llm.model, str(p).encode()) for p in adapters]
    assert all(loaded), "llama.cpp refused an adapter"
    answers = {}
    try:
        for scales in ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)):
            ptrs = (llama_cpp.llama_adapter_lora_p_ctypes * 2)(*loaded)
            llama_cpp.llama_set_adapters_lora(llm.ctx, ptrs, 2, (ctypes.c_float * 2)(*scales))
            llm.reset()
            ids = prompt_ids(base)
            llm.eval(ids)
            out = []
            for _ in range(TOKENS):
                logits = np.array(llm.scores[llm.n_tokens - 1])
                top2 = np.sort(logits)[-2:]
                assert top2[1] - top2[0] > 1e-3 * np.abs(logits).max(), "a near tie: another build's rounding could pick either"
                out.append(int(np.argmax(logits)))
                llm.eval(out[-1:])
            answers[scales] = out
    finally:
        llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
        for p in loaded:
            llama_cpp.llama_adapter_lora_free(p)
        llm.close()
    assert len({tuple(v) for v in answers.values()}) == 3, "the random adapters do not move the greedy answer apart"
    return answers


def scaled(a: float, b: float) -> list[dict]:
    return [{"id": A, "scale": a}, {"id": B, "scale": b}]


def test_lora_adapters_lists_both_in_order(server, setup):
    _, _, (a, b) = setup
    listed = server.get("/lora-adapters").json()
    assert [(x["id"], Path(x["path"]).name, x["scale"]) for x in listed] == [(A, a.name, 0.0), (B, b.name, 0.0)]


def test_each_adapter_alone_answers_as_llama_cpp_python(server, setup, reference):
    base = setup[0]
    only_a, only_b = served(server, base, scaled(1, 0)), served(server, base, scaled(0, 1))
    assert only_a == reference[(1.0, 0.0)] == served(server, base, scaled(1, 0))  # and a second identical request agrees
    assert only_b == reference[(0.0, 1.0)]
    assert served(server, base, [{"id": A, "scale": 1}]) == only_a  # an adapter left out of a non-empty list is at 0


def test_both_at_zero_is_the_bare_base(server, setup, reference):
    base = setup[0]
    assert served(server, base, scaled(0, 0)) == reference[(0.0, 0.0)]
    assert served(server, base, None) == reference[(0.0, 0.0)]  # no `lora` field: the global scales, 0 from --lora-scaled


def test_an_empty_lora_list_keeps_the_global_scales(server, setup, reference):
    """llama.cpp issue 28674, as this llama-server does it: after POST /lora-adapters sets A to 1 for everyone, a request
    with `"lora": []` (or none) gets A at 1, as if it had sent nothing; only a non-empty list overrides the global
    scales, so a client that wants the bare base must name every adapter at 0."""
    base = setup[0]
    assert server.post("/lora-adapters", json=scaled(1, 0)).status_code == 200
    try:
        assert [x["scale"] for x in server.get("/lora-adapters").json()] == [1.0, 0.0]
        assert served(server, base, []) == reference[(1.0, 0.0)]
        assert served(server, base, None) == reference[(1.0, 0.0)]
        assert served(server, base, scaled(0, 0)) == reference[(0.0, 0.0)]
        assert served(server, base, scaled(0, 1)) == reference[(0.0, 1.0)]
    finally:
        assert server.post("/lora-adapters", json=scaled(0, 0)).status_code == 200
    assert served(server, base, []) == reference[(0.0, 0.0)]


def test_lora_scaled_takes_one_file_colon_scale_argument(setup):
    """This llama.cpp reads `--lora-scaled FILE:SCALE[,...]`; the two-argument `--lora-scaled FILE SCALE` of older builds
    stops the server before it loads anything, so docs/serving.md and the cards must give the one-argument form."""
    _, gguf, (a, _) = setup
    old = subprocess.run([str(built()), "-m", str(gguf), "--lora-scaled", str(a), "0", "--port", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert old.returncode != 0 and "lora-scaled format: FNAME:SCALE" in old.stdout + old.stderr
