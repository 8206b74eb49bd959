"""The fuzzing harness: the HTTP API fuzzed from the server's own OpenAPI schema (schemathesis), and property tests
(hypothesis) for the manifesto parser, identity names, layer folders and the data reader.

Each property says what must hold for *any* input, not for the inputs someone thought of. The runs are bounded and
derandomized here (the same examples every run, a few seconds each); `bench/fuzz_soak.py` runs them with many more
random examples. A failure prints the smallest input hypothesis found: add it as a regression test where it belongs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from credo.errors import CredoError, LayerError  # noqa: E402

# "ci" (the default): bounded and derandomized, for `make test`; "soak": many random examples (bench/fuzz_soak.py).
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("soak", max_examples=2000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("CREDO_FUZZ_PROFILE", "ci"))
SCALE = 1 if os.environ.get("CREDO_FUZZ_PROFILE", "ci") == "ci" else 50  # max_examples below are the ci sizes


def examples(n: int) -> settings:
    return settings(max_examples=n * SCALE)


# --- the manifesto parser ------------------------------------------------------------------------------------------

MARKDOWN = st.lists(
    st.sampled_from(["---", "name: x", "evals:", "  persona: Yes", "  a: Maybe", "  b: {answer: No, clause: x.y}", "date: 2001-02-30",
                     "# Title", "## Examples", "## Rules", "- a rule", "* item {#pin}", "1. first", "User: hi", "Assistant: hello",
                     "**User:** hey", "> Assistant: quoted", "", "   ", "text under a heading", "name: [a, b]", "evals: 3", "{#x}",
                     "\ufeff", "\r", "\x00", "---\n---", "description: {a: 1}", "- " + "w " * 30, "key: &a [*a]"]),
    max_size=14,
).map("\n".join)


@given(st.one_of(st.binary(max_size=400), MARKDOWN.map(lambda t: t.encode("utf-8", "surrogatepass"))))
@examples(150)
def test_any_bytes_make_a_manifesto_or_one_line_error(data):
    from credo.manifesto import Manifesto

    try:
        m = Manifesto.from_bytes(data, source="fuzz.md")
    except CredoError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert m.clauses and all(c.id and c.text for c in m.clauses)
    assert len(set(m.clause_ids)) == len(m.clause_ids)
    assert Manifesto.from_text(m.text).clause_ids == m.clause_ids  # parsing is a function of the text


# --- identity names ------------------------------------------------------------------------------------------------

@given(st.one_of(st.text(max_size=70), st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,63}\n?", fullmatch=True)))
@examples(200)
def test_an_identity_name_is_a_plain_folder_name_or_refused(name):
    from credo.server.identities import InvalidName, check_name

    try:
        check_name(name)
    except InvalidName as e:
        assert "\n" not in str(e).replace("\\n", "")
        return
    assert name == name.strip() and "/" not in name and "\\" not in name and name not in {".", ".."} and not name.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) and 1 <= len(name) <= 64
    root = Path(tempfile.gettempdir()) / "credo-names"
    assert (root / name).resolve().parent == root.resolve()


# --- layer folders -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layer_folders(tmp_path_factory, tiny):
    """One saved folder per kind that has a payload, to be copied and mutated."""
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto

    root = tmp_path_factory.mktemp("fuzz-layers")
    m = Manifesto.from_text("---\nname: fuzz\n---\n# Voice\n- Speak plainly.\n- Be kind.\n", source="fuzz.md")
    return {kind: save_layer(compile_layer(m, tiny, kind), root / kind) for kind in ("prompt", "cache")}


def _mutations(names: list[str]):
    target = st.sampled_from(names)
    return st.one_of(
        st.tuples(st.just("flip"), target, st.integers(0, 1 << 20), st.integers(1, 255)),
        st.tuples(st.just("truncate"), target, st.integers(0, 1 << 20), st.just(0)),
        st.tuples(st.just("delete"), target, st.just(0), st.just(0)),
        st.tuples(st.just("append"), target, st.just(0), st.integers(0, 255)),
        st.tuples(st.just("add"), st.sampled_from(["lora.gguf", "control.gguf", "extra.bin", ".hidden", "sub/x.safetensors"]),
                  st.just(0), st.integers(0, 255)),
    )


def _apply(folder: Path, mutation) -> None:
    op, name, at, value = mutation
    path = folder / name
    if op == "add":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([value]) * 8)
    elif op == "delete":
        path.unlink()
    elif op == "append":
        path.write_bytes(path.read_bytes() + bytes([value]))
    else:
        data = bytearray(path.read_bytes())
        if not data:
            return
        if op == "flip":
            data[at % len(data)] ^= value
        else:
            del data[at % len(data):]
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["prompt", "cache"])
def test_a_mutated_layer_folder_loads_identically_or_is_refused_as_corrupt(layer_folders, tiny, kind):
    from credo.layers import load_layer
    from credo.runtime.torch_engine import TorchEngine

    good = layer_folders[kind]
    original = load_layer(good, tiny)
    expected = (original.info.to_json(), TorchEngine(tiny, original).complete("Hi", max_tokens=3))
    names = sorted(str(p.relative_to(good)) for p in good.rglob("*") if p.is_file())

    @given(st.lists(_mutations(names), min_size=1, max_size=3))
    @examples(60)
    def check(mutations):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / kind
            shutil.copytree(good, folder)
            for mutation in mutations:
                if mutation[0] != "add" and not (folder / mutation[1]).is_file():
                    continue
                _apply(folder, mutation)
            try:
                layer = load_layer(folder, tiny)
            except LayerError as e:
                assert "\n" not in str(e)
                return
            assert (layer.info.to_json(), TorchEngine(tiny, layer).complete("Hi", max_tokens=3)) == expected, mutations

    check()


# --- the data reader -----------------------------------------------------------------------------------------------

LINES = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b'{"text": "a document"}', b'{"text": ""}', b'{"text": 5}', b'{"id": 1, "text": "x"}', b"[1, 2]", b"null",
                     b'{"text": "\\ud800"}', b'{"text": "caf\xc3\xa9"}', b"\xff\xfe", b'{"text": "ok", "metadata": "x"}', b"{"]),
)


@given(lines=st.lists(LINES, max_size=12), suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".txt"]), cut=st.integers(0, 400))
@examples(60)
def test_any_input_file_is_read_or_reported_never_raised(lines, suffix, cut):
    """Whatever a file holds (and however it is cut short), the reader yields documents and reports the rest with its
    file and line: it never raises."""
    import gzip

    from credo.data.io import CorpusReader

    raw = b"\n".join(lines) + b"\n"
    if suffix == ".jsonl.gz":
        raw = gzip.compress(raw)
        raw = raw[: max(1, len(raw) - cut)] if cut else raw
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"in{suffix}").write_bytes(raw)
        reader = CorpusReader(tmp, [f"in{suffix}"], bad_folder=str(Path(tmp) / "bad"), doc_progress=False)
        docs = list(reader.run(None, 0, 1))
        bad = [json.loads(x) for p in sorted((Path(tmp) / "bad").glob("*.jsonl")) for x in p.read_text().splitlines()]
    assert all(d.text.strip() for d in docs)
    assert all(b["file"] == f"in{suffix}" and isinstance(b["line"], int) and b["error"] for b in bad)
    if suffix == ".jsonl":
        assert len(docs) + len(bad) == sum(1 for x in lines for part in x.split(b"\n") if part.strip()) or bad


# --- the HTTP API, fuzzed from its OpenAPI schema -------------------------------------------------------------------

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api(tmp_path_factory, isolated_work):
    """A server on the tiny base (one prompt identity) in a sandbox folder, reached over real HTTP."""
    from credo.base import tiny_base
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto
    from credo.server.app import ServeSettings, create_app
    from credo.server.engines.torch import TorchServeEngine
    from credo.server.live import LiveServer

    sandbox = tmp_path_factory.mktemp("fuzz-sandbox")
    layers = sandbox / "layers"
    base = tiny_base(0)
    m = Manifesto.from_text("---\nname: calm\n---\n# Voice\n- Answer calmly.\n", source="calm.md")
    save_layer(compile_layer(m, base, "prompt", name="calm"), layers / "calm")
    settings_ = ServeSettings(layers_dir=layers, max_tokens_limit=8, default_max_tokens=4, max_body_bytes=64 * 1024,
                              measure_fidelity=False, max_request_seconds=20)
    app = create_app(base, TorchServeEngine(base), settings_)
    cwd = sorted(os.listdir("."))
    with LiveServer(app) as live:
        yield live, app, sandbox
        for job in list(app.state.identities.jobs.values()):  # compiles the fuzzer started in the background
            job.done.wait(60)
    assert sorted(p.name for p in sandbox.iterdir()) == ["layers"], "a request wrote outside the layers folder"
    assert sorted(os.listdir(".")) == cwd, "a request wrote into the working directory"


def _published_schema():
    """The schema the server publishes at /openapi.json (the same whatever the base), read from a throwaway app at
    collection time: schemathesis's lazy `from_fixture` loader does not run under pytest 9."""
    from fastapi.testclient import TestClient

    from credo.base import tiny_base
    from credo.server.app import ServeSettings, create_app
    from credo.server.engines.torch import TorchServeEngine

    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_base(0, layers=1)
        app = create_app(base, TorchServeEngine(base), ServeSettings(layers_dir=Path(tmp), measure_fidelity=False))
        with TestClient(app) as client:  # its lifespan stops the app's worker at the end
            published = client.get("/openapi.json").json()
    return schemathesis.openapi.from_dict(published)  # not bound to that app: the test sends to a live server


schema = _published_schema()
MODELS = ["tiny-0", "tiny-0@calm", "tiny-0@fuzzed"]  # names that exist (or come to), so requests reach the engine too


@schema.hook
def flatmap_body(context, body):
    """Half the bodies name a real model or identity: random strings alone would only ever meet a 404 or a 400."""
    if not isinstance(body, dict):
        return st.just(body)
    if "model" in body:
        return st.sampled_from([*MODELS, body["model"]]).map(lambda m: {**body, "model": m})
    if "name" in body and "manifesto" in body:
        return st.sampled_from(["fuzzed", "calm", body["name"]]).map(lambda n: {**body, "name": n})
    return st.just(body)


@schema.hook
def flatmap_path_parameters(context, parameters):
    if isinstance(parameters, dict) and "model" in parameters:
        return st.sampled_from([*MODELS, parameters["model"]]).map(lambda m: {**parameters, "model": m})
    if isinstance(parameters, dict) and "name" in parameters and context.operation.method.lower() == "get":
        return st.sampled_from(["calm", "fuzzed", parameters["name"]]).map(lambda n: {**parameters, "name": n})
    return st.just(parameters)


@schema.parametrize()
@settings(max_examples=25 * SCALE)
def test_the_api_never_fails_and_every_error_has_openai_shape(case, api):
    """Any request the schema allows, or almost allows: no 5xx, and every error is {"error": {message, type, param, code}}."""
    live, _, sandbox = api
    response = case.call(base_url=live.root, timeout=30)
    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, response.text[:300]
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    for path in (sandbox / "layers").iterdir():  # identities come and go, but only as plain folder names
        assert path.name[0] == "." or "\n" not in path.name
