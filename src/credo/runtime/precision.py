"""The one decision of device and precision: the dtype credo's heavy passes run in on this machine.

bfloat16 halves the bytes a pass moves and, on chips with bf16 matrix units (AMX, a CUDA GPU), runs the same matmul
several times faster than float32. Without them torch emulates it, and bf16 is the *slow* side, by 2x to nearly 100x
(docs/precision.md). So no other module names a reduced dtype: each asks here.

- CUDA with bf16 support: bf16.
- an x86 CPU whose torch kernels stop below AVX512, or whose flags show neither `avx512_bf16` nor `amx_bf16`: fp32,
  without measuring.
- otherwise (bf16 instructions, or flags that cannot be read): a micro-benchmark of tens of milliseconds, a slice of
  the output head's matmul in both dtypes; bf16 when it runs at least `MARGIN` times as fast (a near tie keeps
  float32, the exact side). Its timings are kept as JSON under the cache folder (`runtime/precision-*.json`), keyed by
  CPU model, torch's capability, torch version, thread count and the variables that limit the instruction set.

A second, smaller decision rides on it: the greedy head, the precision the teacher's 262k-wide output head picks its
candidates in before they are rescored exactly (`Base.greedy_next`). Under auto on a CPU it is int8 where torch has an
int8 linear and it measured at least `MARGIN` times as fast as the chosen precision on the same slice (AVX2 held:
3-8x fp32); else the chosen precision itself. An explicit fp32 or bf16 keeps the head in it.

`CREDO_PRECISION=auto|fp32|bf16`, or `choose()` (the commands' `--precision`), overrides the decision. Results that
differ between the two precisions are cached under keys that hold its name (`credo.hyper.keep_stats`,
`credo.hyper.base_states`, distill's work folder); every layer records the precision it was compiled in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from credo import int8_head
from credo.base import cache_dir
from credo.errors import CredoError
from credo.fsutil import write_text_atomic

if TYPE_CHECKING:
    from credo.base import Base

CHOICES = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
ENV = "CREDO_PRECISION"
ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MARGIN = 1.25  # bf16 must be this many times as fast as float32 to be chosen
HEAD_SLICE = (32, 4096, 640)  # rows, outputs, width: 1/64 of Gemma 3 270M's output head at a teacher batch's width


@dataclass(frozen=True)
class Precision:
    """What the heavy passes run in: `name` (fp32 or bf16) on `device` (cpu, cuda), whose `capability` is torch's CPU
    capability (with the CPU's bf16 flags) or the GPU's name, and why; `head` is what the greedy head picks its
    candidates in (fp32, bf16, int8; empty: `name`)."""

    name: str
    device: str
    capability: str
    reason: str
    head: str = ""

    @property
    def greedy_head(self) -> torch.dtype | str:
        """The greedy head's precision as `Base.greedy_next` takes it: a dtype, or "int8"."""
        head = self.head or self.name
        return head if head == "int8" else DTYPES[head]

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        return self.name != "fp32"

    @property
    def where(self) -> str:
        """The device and its capability, as a layer records them: 'cpu AVX512', 'cuda NVIDIA H200'."""
        return f"{self.device} {self.capability}".strip()


_chosen: str | None = None  # set by `choose` (the commands' --precision)
_decided: dict[tuple, Precision] = {}


def choose(name: str | None) -> None:
    """Override the decision for this process (None: back to $CREDO_PRECISION, else auto)."""
    global _chosen
    if name is not None and name not in CHOICES:
        raise CredoError(f"--precision must be one of {', '.join(CHOICES)}, not {name!r}")
    _chosen = name
    requested()  # a bad $CREDO_PRECISION fails here, before any model loads


def requested() -> tuple[str, str]:
    """The precision asked for and who asked: --precision, then $CREDO_PRECISION, else auto."""
    if _chosen is not None:
        return _chosen, "--precision"
    value = os.environ.get(ENV, "").strip().lower()
    if value and value not in CHOICES:
        raise CredoError(f"{ENV} must be one of {', '.join(CHOICES)}, not {value!r}")
    return (value, ENV) if value else ("auto", "")


def current(device: str = "cpu") -> Precision:
    """The precision for `device` in this process: decided once per thread count and instruction-set setting."""
    choice, source = requested()
    key = (device, choice, source, torch.get_num_threads(), tuple(_isa_env().items()))
    if key not in _decided:
        _decided[key] = decide(device, choice, source)
    return _decided[key]


def of(base: Base) -> Precision:
    """The precision for the device `base` lives on."""
    return current(base.device.type)


def forget() -> None:
    """Drop this process's decisions (tests; a changed machine setting is picked up by the key anyway)."""
    _decided.clear()


def decide(device: str = "cpu", choice: str = "auto", source: str = "") -> Precision:
    """The decision itself; `time_linear` (the micro-benchmark) and the machine's facts are read at call time."""
    p = _decide_precision(device, choice, source)
    if choice != "auto" or device != "cpu" or not int8_head.available():
        return p
    t = timings(device, (p.name, "int8"))
    ratio = t[f"{p.name}_ms"] / t["int8_ms"]
    if ratio >= MARGIN:
        return dataclasses.replace(p, head="int8", reason=f"{p.reason}; greedy head in int8 ({ratio:.1f}x {p.name}'s speed)")
    return p


def _decide_precision(device: str, choice: str, source: str) -> Precision:
    if choice not in CHOICES:
        raise CredoError(f"precision must be one of {', '.join(CHOICES)}, not {choice!r}")
    facts = machine(device)
    capability = facts.get("gpu") or "+".join([facts["capability"], *(facts["bf16_flags"] or [])])
    if choice != "auto":
        return Precision(choice, device, capability, f"asked for by {source or 'the caller'}")
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", device, capability, "the GPU runs bf16 natively")
        return Precision("fp32", device, capability, "the GPU has no bf16 support")
    if device != "cpu":
        return Precision("fp32", device, capability, f"no bf16 decision is made for {device}")
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    if x86 and not facts["capability"].startswith("AVX512"):
        return Precision("fp32", device, capability, f"torch's CPU kernels here are {facts['capability']}: bf16 is emulated")
    if x86 and facts["bf16_flags"] == []:
        return Precision("fp32", device, capability, "no AVX512-BF16 or AMX in the CPU's flags: bf16 is emulated")
    t = timings(device, ("fp32", "bf16"))
    ratio = t["fp32_ms"] / t["bf16_ms"]
    if ratio >= MARGIN:
        return Precision("bf16", device, capability, f"bf16 measured {ratio:.2f}x as fast as fp32 on the head's matmul")
    return Precision("fp32", device, capability, f"bf16 measured {ratio:.2f}x fp32's speed on the head's matmul (below {MARGIN}x)")


# --- the machine ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str] | None]:
    """The CPU's model name and flags (None where /proc/cpuinfo cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor() or platform.machine(), None
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    flags = fields.get("flags", fields.get("features"))  # x86, Arm
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or platform.processor() or platform.machine()
    return model, frozenset(flags.split()) if flags is not None else None


def _isa_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ISA_VARS if os.environ.get(k)}


def machine(device: str = "cpu") -> dict[str, Any]:
    """The facts the decision and every benchmark header are made of."""
    model, flags = _cpuinfo()
    facts: dict[str, Any] = {
        "cpu": model,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags": sorted(f for f in BF16_FLAGS if f in flags) if flags is not None else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "isa_env": _isa_env(),
    }
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
    return facts


# --- the micro-benchmark -------------------------------------------------------------------------------------------
def time_linear(device: str = "cpu", names: tuple[str, ...] = ("fp32", "bf16"), repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` milliseconds of a slice of the output head's matmul in each of `names` (fp32, bf16, int8),
    taken in turn (after one call each that picks the kernels), and the seconds the whole measurement took."""
    rows, out, width = HEAD_SLICE
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(rows, width, generator=gen), torch.randn(out, width, generator=gen)
    start = time.perf_counter()
    calls: dict[str, Any] = {}
    for name in names:
        if name == "int8":
            packed = int8_head.pack(w)
            calls[name] = functools.partial(int8_head.logits, x, packed)
        else:
            a, b = x.to(device, DTYPES[name]), w.to(device, DTYPES[name])
            calls[name] = functools.partial(torch.nn.functional.linear, a, b)
    best = dict.fromkeys(calls, float("inf"))
    with torch.no_grad():
        for call in calls.values():
            call()
        for _ in range(repeats):
            for name, call in calls.items():
                t0 = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - t0)
    return {f"{name}_ms": round(ms * 1e3, 4) for name, ms in best.items()} | {"seconds": round(time.perf_counter() - start, 4)}


def cache_root() -> Path:
    return cache_dir() / "runtime"


def _timings_path(facts: dict[str, Any]) -> Path:
    key = {k: facts[k] for k in ("cpu", "capability", "bf16_flags", "threads", "torch", "isa_env")}
    return cache_root() / f"precision-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}.json"


def timings(device: str = "cpu", names: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """The micro-benchmark's timings of `names` on this machine: read from the cache, the ones missing measured and
    written back (atomically). A cache file that does not parse is measured again; a timing that is not positive too."""
    facts = machine(device)
    path = _timings_path(facts)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    missing = tuple(n for n in names if not _positive(data.get(f"{n}_ms")))
    if not missing:
        return data
    data |= time_linear(device, missing) | {"machine": facts, "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):  # a read-only cache folder: measure again next time
        write_text_atomic(path, json.dumps(data, indent=1))
    return data


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


# --- running in the chosen precision -------------------------------------------------------------------------------
@contextlib.contextmanager
def compute(base: Base, weights: bool = True) -> Iterator[Precision]:
    """The block runs in the chosen precision. Under bf16: autocast, and (with `weights`) the decoder's linear weights
    swapped for bf16 copies (`lowered_linears`); under fp32 nothing changes at all. Nests: an inner block finds the
    weights already lowered."""
    p = of(base)
    if not p.reduced:
        yield p
        return
    lowered = lowered_linears(base.model, p.dtype) if weights else contextlib.nullcontext()
    with torch.autocast(base.device.type, dtype=p.dtype), lowered:
        yield p


@contextlib.contextmanager
def lowered_linears(model: Any, dtype: torch.dtype) -> Iterator[None]:
    """The decoder's linear weights swapped for copies in `dtype` while an autocast pass runs, the originals restored
    after (on error too).

    Autocast keeps its casts only for weights that require grad, so a frozen model's 126 linear weights are cast again
    in every forward call, about a tenth of a hyper compile. The copies are the same bits
    as those casts (round to nearest), so outputs do not change. Not for code that other threads run on this model
    meanwhile (the server runs compiles on its model worker)."""
    linears = [m for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear) and m.weight.dtype != dtype]
    saved = [m.weight.data for m in linears]
    try:
        for m in linears:
            m.weight.data = m.weight.data.to(dtype)
        yield
    finally:
        for m, w in zip(linears, saved):
            m.weight.data = w


# --- benchmark headers ---------------------------------------------------------------------------------------------
def machine_header(device: str = "cpu") -> tuple[dict[str, Any], str]:
    """What every benchmark prints at its head and writes into its results: the CPU, torch's capability and the CPU's
    bf16 flags, the thread count, and the precision chosen (and why)."""
    p = current(device)
    facts = machine(device) | {"precision": p.name, "precision_reason": p.reason}
    flags = facts["bf16_flags"]
    parts = [
        facts.get("gpu") or facts["cpu"],
        f"torch {facts['torch']} capability {facts['capability']}",
        "bf16 flags: " + (", ".join(flags) if flags else "none" if flags is not None else "unknown"),
        f"{facts['threads']} threads",
        f"precision {p.name} ({p.reason})",
    ]
    if facts["isa_env"]:
        parts.append(" ".join(f"{k}={v}" for k, v in facts["isa_env"].items()))
    return facts, "machine: " + " | ".join(parts)
