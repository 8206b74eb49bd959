"""`credo.runtime.precision`: the one decision of precision, from the CPU's capability and a micro-benchmark whose
timing is injected here, cached per machine, and overridden by --precision or $CREDO_PRECISION."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from credo import int8_head
from credo.errors import CredoError
from credo.runtime import precision

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FAST_HYPER = {"rank": "4", "answer_tokens": "4", "keep": "0", "report": "false", "chat_probes": "0"}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A CPU that reports AMX (so the decision measures), a fresh cache, no override; `machine(fp32_ms, bf16_ms,
    int8_ms)` sets what the micro-benchmark measures (int8 slow unless given) and returns the list of its calls, each
    the tuple of precisions it timed."""
    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CREDO_PRECISION", raising=False)
    for var in precision.ISA_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(precision, "_cpuinfo", lambda: ("Test CPU with AMX", frozenset({"avx512f", "amx_bf16", "avx512_bf16"})))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    calls: list[tuple[str, ...]] = []

    def measure(fp32_ms: float, bf16_ms: float, int8_ms: float = 1e6) -> list[tuple[str, ...]]:
        ms = {"fp32": fp32_ms, "bf16": bf16_ms, "int8": int8_ms}

        def timed(device: str = "cpu", names: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, float]:
            calls.append(tuple(names))
            return {f"{n}_ms": ms[n] for n in names} | {"seconds": 0.01}

        monkeypatch.setattr(precision, "time_linear", timed)
        for f in precision.cache_root().glob("precision-*.json"):  # what an earlier measurement left
            f.unlink()
        precision.forget()
        return calls

    precision.forget()
    yield measure
    monkeypatch.delenv("CREDO_PRECISION", raising=False)
    precision.choose(None)
    precision.forget()


def test_bf16_is_chosen_only_where_it_measures_clearly_faster(machine):
    machine(fp32_ms=2.0, bf16_ms=8.0)
    p = precision.current()
    assert (p.name, p.dtype, p.reduced) == ("fp32", torch.float32, False) and "0.25x" in p.reason
    machine(fp32_ms=2.0, bf16_ms=1.8)  # a near tie keeps float32, the exact side
    assert precision.current().name == "fp32"
    machine(fp32_ms=4.0, bf16_ms=1.0)
    p = precision.current()
    assert (p.name, p.dtype, p.where) == ("bf16", torch.bfloat16, "cpu AVX512+amx_bf16+avx512_bf16") and "4.00x" in p.reason


def test_a_cpu_without_fast_bf16_gets_fp32_without_measuring(machine, monkeypatch):
    calls = machine(fp32_ms=4.0, bf16_ms=1.0)
    monkeypatch.setattr(precision, "_cpuinfo", lambda: ("Test CPU", frozenset({"avx2", "avx512f"})))
    assert precision.current().name == "fp32" and "no AVX512-BF16 or AMX" in precision.current().reason
    monkeypatch.setattr(precision, "_cpuinfo", lambda: ("Test CPU with AMX", frozenset({"amx_bf16"})))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    precision.forget()
    assert precision.current().name == "fp32" and "AVX2" in precision.current().reason
    assert all("bf16" not in c for c in calls)  # the greedy head's int8 may be timed, bf16 never


def test_the_measurement_is_cached_per_machine_and_a_corrupt_file_is_measured_again(machine, monkeypatch):
    calls = machine(fp32_ms=4.0, bf16_ms=1.0)
    with_int8 = int8_head.available()
    once = [("fp32", "bf16"), ("int8",)] if with_int8 else [("fp32", "bf16")]  # the precision, then the greedy head
    assert precision.current().name == "bf16" and calls == once
    (path,) = precision.cache_root().glob("precision-*.json")
    assert json.loads(path.read_text())["machine"]["cpu"] == "Test CPU with AMX"
    precision.forget()
    assert precision.current().name == "bf16" and calls == once  # read back
    path.write_text("{not json")
    precision.forget()
    assert precision.current().name == "bf16" and calls == once * 2
    assert json.loads(path.read_text())["bf16_ms"] == 1.0  # rewritten whole
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another instruction-set limit, another thread count: other files
    precision.current()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if before != 1 else 2)
        precision.current()
    finally:
        torch.set_num_threads(before)
    assert calls == once * 4 and len(list(precision.cache_root().glob("precision-*.json"))) == 3


def test_the_real_micro_benchmark_times_both_dtypes():
    t = precision.time_linear()  # what it costs is bench/precision.py's figure, not a test's
    assert t["fp32_ms"] > 0 and t["bf16_ms"] > 0 and t["seconds"] > 0
    if int8_head.available():
        assert precision.time_linear(names=("int8",))["int8_ms"] > 0


@pytest.mark.skipif(not int8_head.available(), reason="this torch has no CPU int8 linear")
def test_the_greedy_head_goes_int8_only_where_measured_faster_and_not_when_a_precision_is_asked(machine, monkeypatch):
    machine(fp32_ms=2.0, bf16_ms=8.0, int8_ms=0.5)
    p = precision.current()
    assert (p.name, p.head, p.greedy_head) == ("fp32", "int8", "int8") and "greedy head in int8 (4.0x fp32's speed)" in p.reason
    machine(fp32_ms=4.0, bf16_ms=1.0, int8_ms=0.9)  # int8 against the chosen bf16: a near tie keeps bf16
    assert precision.current().greedy_head == torch.bfloat16
    machine(fp32_ms=2.0, bf16_ms=8.0, int8_ms=0.5)
    monkeypatch.setenv("CREDO_PRECISION", "fp32")  # asked for: exactly that, the head included
    assert precision.current().greedy_head == torch.float32


@pytest.mark.skipif(not int8_head.available(), reason="this torch has no CPU int8 linear")
def test_the_int8_greedy_head_picks_the_float32_heads_tokens(tiny):
    """Rough int8 logits, their top candidates rescored in float32: the float32 head's tokens, its log-probabilities
    to ~1e-2 (the normaliser is summed over the rough logits)."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(64, tiny.model.config.hidden_size, generator=gen)
    exact, exact_lp = tiny.greedy_next(hidden, torch.float32)
    token, lp = tiny.greedy_next(hidden, "int8")
    assert torch.equal(token, exact) and torch.allclose(lp, exact_lp, atol=2e-2)


def test_the_override_wins_and_a_bad_value_is_one_line(machine, monkeypatch):
    machine(fp32_ms=4.0, bf16_ms=1.0)
    monkeypatch.setenv("CREDO_PRECISION", "fp32")
    assert precision.current().name == "fp32" and "CREDO_PRECISION" in precision.current().reason
    precision.choose("bf16")
    assert precision.current().name == "bf16" and "--precision" in precision.current().reason
    with pytest.raises(CredoError, match="--precision must be one of auto, fp32, bf16"):
        precision.choose("half")
    precision.choose(None)
    monkeypatch.setenv("CREDO_PRECISION", "float16")
    with pytest.raises(CredoError, match="CREDO_PRECISION"):
        precision.current()


def test_a_tiny_compile_follows_the_measured_decision(machine, tiny):
    from credo.layers import compile_layer
    from credo.manifesto import Manifesto

    m = Manifesto.from_file(EXAMPLES / "terse.md")
    machine(fp32_ms=2.0, bf16_ms=8.0)
    slow = compile_layer(m, tiny, "hyper", FAST_HYPER)
    machine(fp32_ms=8.0, bf16_ms=2.0)
    fast = compile_layer(m, tiny, "hyper", FAST_HYPER)
    assert (slow.info.precision, fast.info.precision) == ("fp32", "bf16")
    assert fast.info.device == "cpu AVX512+amx_bf16+avx512_bf16"


def test_precision_on_the_command_line_overrides_the_measurement(machine, tmp_path, monkeypatch, capsys):
    from test_cli import run as run_cli

    def run(*args: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, *args)

    monkeypatch.chdir(tmp_path)
    machine(fp32_ms=8.0, bf16_ms=2.0)  # bf16 measures faster
    code, out, _ = run("compile", str(EXAMPLES / "terse.md"), "--kind", "prompt", "--base", "tiny:0", "--precision", "fp32")
    assert code == 0 and "(fp32 on cpu AVX512" in out
    assert json.loads((tmp_path / "layers" / "terse-prompt" / "layer.json").read_text())["precision"] == "fp32"
    code, out, _ = run("compile", str(EXAMPLES / "terse.md"), "--kind", "cache", "--base", "tiny:0")
    assert code == 0 and "(bf16 on cpu AVX512" in out  # no flag: the measurement again
    code, out, _ = run("layers", "ls")
    assert code == 0 and "fp32 cpu AVX512" in out and "bf16 cpu AVX512" in out
    code, _, err = run("compile", str(EXAMPLES / "terse.md"), "--kind", "prompt", "--base", "tiny:0", "--precision", "fp16")
    assert code == 2 and err.strip().splitlines() == ["error: --precision must be one of auto, fp32, bf16, not 'fp16'"]


def test_the_benchmark_header_names_the_machine_and_the_choice(machine):
    machine(fp32_ms=8.0, bf16_ms=2.0)
    facts, line = precision.machine_header()
    assert facts["cpu"] == "Test CPU with AMX" and facts["capability"] == "AVX512" and facts["precision"] == "bf16"
    assert facts["threads"] == torch.get_num_threads() and line.startswith("machine: Test CPU with AMX |") and "precision bf16" in line


def test_demo_recompiles_a_layer_made_in_another_precision(tiny, pirate, tmp_path, monkeypatch):
    """`credo demo` reuses a layer only if it was made in the precision chosen now; a folder from before the choice was
    one decision (a `bf16` setting in its params, no precision recorded) counts as made in that setting's precision."""
    from rich.console import Console

    from credo.demo import _compile_or_reuse
    from credo.layers.kinds.hyper import HyperLayer

    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(HyperLayer, "demo_settings", {"rank": "4", "answer_tokens": "4", "keep": "0", "chat_probes": "0"})
    folder, console = tmp_path / "pirate-hyper", Console(quiet=True)
    monkeypatch.setenv("CREDO_PRECISION", "fp32")
    assert _compile_or_reuse(pirate, tiny, "hyper", folder, console)[1] is False
    assert _compile_or_reuse(pirate, tiny, "hyper", folder, console)[1] is True
    monkeypatch.setenv("CREDO_PRECISION", "bf16")
    layer, reused = _compile_or_reuse(pirate, tiny, "hyper", folder, console)
    assert reused is False and layer.info.precision == "bf16"
    info = json.loads((folder / "layer.json").read_text())
    info["params"]["bf16"] = True  # as hyper and distill wrote it until 2026-12-03
    for key in ("precision", "device", "checksum"):  # none of them was written then
        info.pop(key, None)
    (folder / "layer.json").write_text(json.dumps(info))
    layer, reused = _compile_or_reuse(pirate, tiny, "hyper", folder, console)
    assert reused is True and layer.info.precision == ""  # it loads, and serves in whatever precision runs now
    monkeypatch.setenv("CREDO_PRECISION", "fp32")
    assert _compile_or_reuse(pirate, tiny, "hyper", folder, console)[1] is False
