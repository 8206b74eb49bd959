"""Kill tests: SIGKILL at random points of a compile, a server-side compile and each data stage, ingest included, and
at the moments a random delay seldom hits (half a layer folder written, a stage's output just renamed into place).
Afterwards the target is complete and verified, or absent; and a rerun of the same command finishes with output
identical to an uninterrupted run, leaving no hidden leftovers.

The kill points are random (the seed is printed on failure; CREDO_KILL_SEED=N replays one). Every process runs torch on
one thread, so a rerun in this process and a run in a child compute bit for bit the same. `bench/fuzz_soak.py` repeats
these with many more kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("datatrove")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SEED = int(os.environ.get("CREDO_KILL_SEED", random.SystemRandom().randrange(1 << 30)))
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def rng(request):
    return random.Random(f"{SEED}-{request.node.name}")


def spawn(args: list[str], cwd: Path, code: str | None = None) -> subprocess.Popen:
    """`credo ARGS` (or `python -c CODE`) in a child on one torch thread, in its own session (so a kill reaches no one else)."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "credo.cli", *args]
    env = os.environ | ONE_THREAD | {"PYTHONPATH": os.pathsep.join(p for p in [str(REPO / "src"), os.environ.get("PYTHONPATH")] if p)}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_after(proc: subprocess.Popen, delay: float, ready=lambda: True, limit: float = 120.0) -> bool:
    """Once `ready()` (or the child ended), wait `delay` seconds and SIGKILL it; True when the kill landed mid-run."""
    deadline = time.monotonic() + limit
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    end = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.005)
    killed = proc.poll() is None
    if killed:  # the whole process group: datatrove's executors keep a multiprocessing manager process beside the command
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return killed


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def payload(folder: Path) -> dict:
    """What must be identical between runs: every listed file's hash (layer.json also holds times)."""
    return json.loads((folder / "layer.json").read_text())["files"]


# --- a compile -----------------------------------------------------------------------------------------------------

def _reference_cache_layer(tmp_path: Path) -> dict:
    from credo.base import tiny_base
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto

    m = Manifesto.from_file(EXAMPLES / "pirate.md")
    return payload(save_layer(compile_layer(m, tiny_base(0), "cache", name="pirate"), tmp_path / "reference" / "pirate"))


def _check_layer_or_nothing(folder: Path, expected: dict, note: str) -> None:
    from credo.base import tiny_base
    from credo.layers import load_layer

    if folder.exists():
        load_layer(folder, tiny_base(0))  # verified: every file listed and matching
        assert payload(folder) == expected, note


def credo_here(monkeypatch, capsys, *args: str) -> None:
    """The same command again, in this process (no start-up to wait for)."""
    from test_cli import run

    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err


def _rerun_compile(workdir: Path, monkeypatch, capsys, *extra: str) -> None:
    monkeypatch.chdir(workdir)
    credo_here(monkeypatch, capsys, "compile", str(EXAMPLES / "pirate.md"), "--kind", "cache", "--base", "tiny:0", "-o", "layers/pirate", *extra)


def test_kill_a_compile_at_a_random_point(tmp_path, rng, monkeypatch, capsys, one_thread):
    expected = _reference_cache_layer(tmp_path)
    work = tmp_path / "w"
    work.mkdir()
    delay = rng.uniform(1.5, 7.0)  # imports, loading the base, compiling, writing: wherever it lands
    proc = spawn(["compile", str(EXAMPLES / "pirate.md"), "--kind", "cache", "--base", "tiny:0", "-o", "layers/pirate"], work)
    killed = kill_after(proc, delay)
    note = f"seed {SEED}, killed after {delay:.2f} s: {killed}"
    _check_layer_or_nothing(work / "layers" / "pirate", expected, note)
    _rerun_compile(work, monkeypatch, capsys, *(["--force"] if (work / "layers" / "pirate").exists() else []))
    assert payload(work / "layers" / "pirate") == expected, note
    assert hidden(work / "layers") == [], note


def test_kill_while_the_layer_folder_is_written(tmp_path, monkeypatch, capsys, one_thread):
    """The kill lands inside `save_layer`, at a point a random delay seldom hits: half the payload written."""
    expected = _reference_cache_layer(tmp_path)
    work = tmp_path / "w"
    (work / "layers").mkdir(parents=True)
    code = f"""
import os, signal
import credo.layers.kinds.cache as c
real = c.CacheLayer.save_payload
def half(self, folder):
    real(self, folder)
    (folder / "kv_state.safetensors").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
c.CacheLayer.save_payload = half
from credo.base import tiny_base
from credo.layers import compile_layer, save_layer
from credo.manifesto import Manifesto
save_layer(compile_layer(Manifesto.from_file({str(EXAMPLES / 'pirate.md')!r}), tiny_base(0), "cache", name="pirate"), "layers/pirate")
"""
    proc = spawn([], work, code=code)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "layers" / "pirate").exists()
    assert [n.endswith(".tmp") for n in hidden(work / "layers")] == [True]  # what the killed process left behind
    _rerun_compile(work, monkeypatch, capsys)
    assert payload(work / "layers" / "pirate") == expected
    assert hidden(work / "layers") == []


# --- a server-side compile -----------------------------------------------------------------------------------------

def test_kill_the_server_while_it_compiles(tmp_path, rng, one_thread):
    import httpx
    from fastapi.testclient import TestClient

    from credo.base import tiny_base
    from credo.server.app import ServeSettings, create_app
    from credo.server.engines.torch import TorchServeEngine
    from credo.server.live import free_port

    expected = _reference_cache_layer(tmp_path)
    layers, port = tmp_path / "layers", free_port()
    proc = spawn(["serve", "--base", "tiny:0", "--engine", "torch", "--layers-dir", str(layers), "--port", str(port), "--no-fidelity"],
                 tmp_path)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    deadline = time.monotonic() + 120
    while not up():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    manifesto = (EXAMPLES / "pirate.md").read_text()
    r = httpx.post(url + "/v1/identities", json={"name": "pirate", "manifesto": manifesto, "kind": "cache"}, timeout=30)
    assert r.status_code == 202, r.text
    delay = rng.uniform(0.0, 1.5)
    killed = kill_after(proc, delay)
    note = f"seed {SEED}, killed {delay:.2f} s into the compile: {killed}"
    _check_layer_or_nothing(layers / "pirate", expected, note)

    base = tiny_base(0)
    app = create_app(base, TorchServeEngine(base), ServeSettings(layers_dir=layers, measure_fidelity=False))
    assert hidden(layers) == [], note  # the restarted server swept what the killed one left
    with TestClient(app) as client:
        r = client.post("/v1/identities", json={"name": "pirate", "manifesto": manifesto, "kind": "cache", "overwrite": True, "wait": True})
        assert r.status_code == 201, r.text
    assert payload(layers / "pirate") == expected, note
    assert hidden(layers) == [], note


# --- the data stages -------------------------------------------------------------------------------------------------

def _corpus(folder: Path) -> None:
    from test_data import article, random_text, write_jsonl

    for f in range(4):
        rows = [{"id": f"d{f}-{i}", "text": (article(i) if i % 3 else random_text(f * 1000 + i)), "date": f"2024-0{f + 1}-02"}
                for i in range(120)]
        rows += [{"id": f"dup{f}", "text": article(1)}, {"id": f"junk{f}", "text": "As an AI language model, I cannot. " + article(5)}]
        write_jsonl(folder / f"part{f}.jsonl", rows, {7: '{"text": "broken'})


def _stage_args(stage: str, inp: Path, out: Path, index: Path) -> list[str]:
    extra = {"clean": [], "tag": ["--source", "example.org"], "dedup": ["--index", str(index)]}[stage]
    return ["data", stage, str(inp), str(out), "--tasks", "4", *extra]


def _outputs(out: Path) -> dict:
    """Everything a stage writes, as comparable text: documents kept and removed (tag's run time aside), bad input."""
    files = {}
    for p in sorted(out.rglob("*.jsonl")):
        rows = [json.loads(x) for x in p.read_text().splitlines()]
        for r in rows:
            r.pop("added", None)
        files[str(p.relative_to(out))] = rows
    return files


@pytest.mark.parametrize("stage", ["clean", "tag", "dedup"])
def test_kill_a_data_stage_at_a_random_point_and_rerun(tmp_path, stage, rng, monkeypatch, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    _corpus(inp)

    start = time.monotonic()
    credo_here(monkeypatch, capsys, *_stage_args(stage, inp, tmp_path / "ref", tmp_path / "ref-index"))
    took = time.monotonic() - start
    reference = _outputs(tmp_path / "ref")

    work = tmp_path / ".out.credo-work"
    delay = rng.uniform(0.0, 1.2 * took)  # anywhere in the run, on this machine's clock (a child runs about as long)
    proc = spawn(_stage_args(stage, inp, out, tmp_path / "index"), tmp_path)
    killed = kill_after(proc, delay, ready=lambda: (work / "run.json").exists())
    note = f"seed {SEED}, {stage} killed {delay:.2f} s after it began: {killed}"
    if out.exists():  # complete, or not there at all
        assert (out / ".credo-data.json").is_file() and (out / "report.json").is_file(), note
        assert _outputs(out) == reference, note
    credo_here(monkeypatch, capsys, *_stage_args(stage, inp, out, tmp_path / "index"), *(["--force"] if out.exists() and not work.exists() else []))
    assert _outputs(out) == reference, note
    assert not work.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in", "ref", "out"] + (["ref-index", "index"] if stage == "dedup" else [])), note
    if stage == "tag":
        stamps = {json.loads(x)["added"] for p in (out / "data").glob("*.jsonl") for x in p.read_text().splitlines()}
        assert len(stamps) == 1, note  # a resumed batch keeps the time it was first tagged
    if stage == "dedup":
        batches = json.loads((tmp_path / "index" / "batches.json").read_text())["batches"]
        assert len(batches) == 1 and batches[0]["kept"] == json.loads((out / "report.json").read_text())["kept"], note


@pytest.mark.parametrize("point", ["before-clean-up", "during-clean-up"])
def test_kill_after_the_output_is_in_place(tmp_path, point, monkeypatch, capsys):
    """The last moments of a stage, which a random delay seldom hits: OUT renamed into place, the work folder not yet
    gone (or half deleted). A rerun of the same command finds the run finished and leaves nothing behind."""
    inp, out = tmp_path / "in", tmp_path / "out"
    _corpus(inp)
    credo_here(monkeypatch, capsys, *_stage_args("tag", inp, tmp_path / "ref", tmp_path / "unused"))
    hook = {
        "before-clean-up": "import credo.data.workspace as w\nreal = w.remove_dir\n"
                           "w.remove_dir = lambda p: die() if (p.parent / 'out').exists() else real(p)",
        "during-clean-up": "import credo.fsutil as f\nreal = f.shutil.rmtree\n"
                           "f.shutil.rmtree = lambda p, *a, **k: die() if str(p).endswith('.old') else real(p, *a, **k)",
    }[point]
    code = f"""
import os, signal, sys
def die(*a):
    os.kill(os.getpid(), signal.SIGKILL)
{hook}
from credo.cli import main
sys.argv = ["credo", *{_stage_args("tag", inp, out, tmp_path / "unused")!r}]
main()
"""
    proc = spawn([], tmp_path, code=code)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL and (out / ".credo-data.json").is_file()
    assert hidden(tmp_path)  # the work folder, whole or half deleted
    finished = not (tmp_path / ".out.credo-work").exists()  # only its deletion was cut short: as after a whole run
    credo_here(monkeypatch, capsys, *_stage_args("tag", inp, out, tmp_path / "unused"), *(["--force"] if finished else []))
    assert _outputs(out) == _outputs(tmp_path / "ref")
    assert hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "ref"]


def test_kill_ingest_at_a_random_point_and_resume(tmp_path, rng, monkeypatch, capsys, one_thread):
    """Continued pre-training killed anywhere: the new base is whole or absent, and `--resume` (from the last checkpoint,
    or a fresh start where there is none) writes the same weights as a run that was never stopped."""
    from test_data import _tagged

    data = _tagged(tmp_path)
    args = ["data", "ingest", str(data), "--base", "tiny:0", "--steps", "12", "--seq-len", "16", "--batch-size", "2",
            "--checkpoint-every", "3", "--layers-dir", str(tmp_path / "no-layers")]
    credo_here(monkeypatch, capsys, *args, "-o", str(tmp_path / "ref"))
    expected = json.loads((tmp_path / "ref" / "credo-base.json").read_text())["sha256"]
    out, work = tmp_path / "new", tmp_path / ".new.ingest-work"
    delay = rng.uniform(0.0, 3.0)
    proc = spawn([*args, "-o", str(out)], tmp_path)
    killed = kill_after(proc, delay, ready=lambda: work.exists())  # the model is loaded and training has begun
    note = f"seed {SEED}, ingest killed {delay:.2f} s into training: {killed}"
    if out.exists():
        assert json.loads((out / "credo-base.json").read_text())["sha256"] == expected, note
    else:
        credo_here(monkeypatch, capsys, *args, "-o", str(out), *(["--resume"] if (work / "checkpoint" / "state.json").is_file() else []))
    assert json.loads((out / "credo-base.json").read_text())["sha256"] == expected, note
    assert not work.exists() and hidden(tmp_path) == [], note
