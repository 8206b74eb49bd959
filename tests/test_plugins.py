"""One way to plug in (issue #22): a new kind, a new suite and a new serving engine are one file each, outside credo,
and each shows up where a user looks for it (`compile --kind`, `eval --suites` and its report, `serve --engine`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import EXAMPLES

KIND = '''
"""`echo`: the manifesto's first clause, said ahead of every conversation."""
from credo.layers.layer import Layer
from credo.layers.registry import register


@register
class EchoLayer(Layer):
    kind = "echo"

    @classmethod
    def build(cls, manifesto, base, config, info):
        info.params["clause"] = manifesto.clauses[0].text
        return cls(info, manifesto)

    def context(self, base):
        return self.info.params["clause"] + "\\n\\n"
'''

SUITE = '''
"""`words`: how many context tokens a row puts ahead of every request."""
from credo.eval.suites.base import SAFETY, Column, Suite, register


@register
class Words(Suite):
    name = "words"
    help = "context tokens ahead of every request"
    order = 165
    columns = (Column("words", "words ahead", lambda c: c.get("words", "tokens"), "{}", SAFETY, 165),)

    def run(self, rows, group=None):
        return {r.name: {"tokens": len(r.engine.context_ids())} for r in rows}
'''

ENGINE = '''
"""`spy`: the torch engine under another name, to show that an engine is one file."""
from credo.server.engines import register
from credo.server.engines.torch import TorchServeEngine


@register
class SpyEngine(TorchServeEngine):
    name = "spy"
    order = 99
'''


@pytest.fixture
def plugged(tmp_path):
    """An environment whose credo loads the three plug-in files (as $CREDO_PLUGINS names them; entry points work alike)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    for name, text in {"echo_kind": KIND, "words_suite": SUITE, "spy_engine": ENGINE}.items():
        (folder / f"{name}.py").write_text(text)
    env = dict(os.environ, CREDO_PLUGINS="echo_kind,words_suite,spy_engine", CREDO_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    return env


def credo(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "credo.cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_kind_a_suite_and_an_engine_each_plug_in_with_one_file(plugged, tmp_path):
    listed = credo(plugged, "plugins")
    assert listed.returncode == 0, listed.stderr
    for name in ("echo", "words", "spy"):
        assert f" {name} " in listed.stdout

    layer = tmp_path / "layers" / "pirate-echo"
    made = credo(plugged, "compile", str(EXAMPLES / "pirate.md"), "--kind", "echo", "--base", "tiny:0", "-o", str(layer))
    assert made.returncode == 0, made.stderr
    assert json.loads((layer / "layer.json").read_text())["kind"] == "echo"

    report = tmp_path / "report"
    scored = credo(plugged, "eval", str(layer), "--suites", "words", "-o", str(report), "--base", "tiny:0", "--quiet")
    assert scored.returncode == 0, scored.stderr
    results = json.loads((report / "report.json").read_text())["results"]
    assert results["pirate-echo"]["words"]["tokens"] > results["base"]["words"]["tokens"]
    assert "words ahead" in (report / "report.md").read_text() and "words ahead" in scored.stdout


def test_the_plugged_engine_serves(plugged, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "layers").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "credo.cli", "serve", "--engine", "spy", "--base", "tiny:0", "--port", str(port),
                             "--layers-dir", str(tmp_path / "layers")], env=plugged, stderr=subprocess.PIPE, text=True)
    try:
        deadline, models = time.monotonic() + 120, None
        while models is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    models = json.loads(r.read())
            except OSError:
                time.sleep(0.3)
        assert models is not None, proc.stderr.read() if proc.poll() is not None else "server did not answer"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "through spy" in err


def test_a_plugin_that_fails_to_load_is_one_line(plugged):
    broken = dict(plugged, CREDO_PLUGINS="no_such_plugin_module")
    res = credo(broken, "layers", "ls")
    assert res.returncode == 2 and res.stderr.strip() == (
        "error: plug-in module 'no_such_plugin_module' failed to load: ModuleNotFoundError: No module named 'no_such_plugin_module'")


def test_an_unknown_engine_fails_before_the_model_loads(plugged):
    res = credo(plugged, "serve", "--engine", "warp", "--base", "no-such-base")
    assert res.returncode == 2 and "unknown engine 'warp'; known engines: llamacpp, torch, spy" in res.stderr
