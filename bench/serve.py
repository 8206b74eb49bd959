"""Benchmark `credo serve` (llama.cpp engine, an identity active) against raw llama.cpp on the same GGUF and prompts.

Prints decode tokens/s and time to first token for both, the cost of switching identity between requests, and a load
run (8 concurrent clients for 60 s on loopback: errors, p50/p95 latency). Run: `.venv/bin/python bench/serve.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "What is the capital of France?",
    "Tell me about the sea.",
    "How do I make bread?",
    "What should I do on a rainy day?",
    "Explain how a compass works.",
    "Who was the first person on the moon?",
]


def stream_chat(client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed request: client-side time to first token, time of the last token, and the server's token count."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    tokens = 0
    with client.stream("POST", url + "/chat/completions", json=body, timeout=300) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
    end = time.perf_counter()
    return {"ttft": (first or end) - start, "decode": (last or end) - (first or end), "tokens": tokens, "total": end - start}


def raw_llama(llm, full_prompts: list[str], max_tokens: int) -> list[dict]:
    """The same prompts (manifesto context + transcript) straight through llama-cpp-python, greedy, same stop rule."""
    rows = []
    for text in full_prompts:
        tokens = llm.tokenize(text.encode(), add_bos=True)
        start = time.perf_counter()
        first = last = None
        n = 0
        out = ""
        for tok in llm.generate(tokens, temp=0.0, top_k=0, min_p=0.0, top_p=1.0, repeat_penalty=1.0):
            now = time.perf_counter()
            if llm._model.token_is_eog(tok) if hasattr(llm._model, "token_is_eog") else tok == llm.token_eos():
                break
            first = first or now
            last = now
            n += 1
            out += llm.detokenize([tok]).decode("utf-8", "ignore")
            if "\nUser:" in out or n >= max_tokens:
                break
        end = time.perf_counter()
        rows.append({"ttft": (first or end) - start, "decode": (last or end) - (first or end), "tokens": n, "total": end - start})
    return rows


def run_raw_process(prompts_file: Path) -> list[dict]:
    """Time raw llama-cpp-python in a fresh interpreter that has never imported torch."""
    out = subprocess.run([sys.executable, __file__, "--raw-worker", str(prompts_file)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_worker(prompts_file: Path) -> None:
    from llama_cpp import Llama

    spec = json.loads(prompts_file.read_text())
    llm = Llama(spec["gguf"], n_ctx=spec["n_ctx"], n_threads=spec["threads"], swa_full=True, verbose=False)
    raw_llama(llm, spec["prompts"][:1], 8)  # warm-up
    rows = raw_llama(llm, spec["prompts"], spec["max_tokens"])
    llm.close()
    print(json.dumps(rows))


def switch_mechanism(base, layers: dict, rounds: int = 20, threads: int = 1) -> dict:
    """In-process: what the llama.cpp engine itself spends making an identity current (restore its KV state, set its
    adapters), alternating identities, apart from decoding. The HTTP figures above carry decode noise of tens of ms."""
    from credo.server.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(base, n_ctx=4096, threads=threads)
    for key, layer in layers.items():
        engine.add(key, layer)
    conv = engine.conversation_ids([{"role": "user", "content": "Hi."}])
    switching, same = [], []
    keys = list(layers)
    for i in range(rounds):
        for key, bucket in ((keys[i % len(keys)], switching), (keys[i % len(keys)], same)):
            ident = engine.identities[key]
            t = time.perf_counter()
            engine._enter(key, ident)
            bucket.append(1000 * (time.perf_counter() - t))
            engine.llm.eval(conv)
    return {"enter_switching_median_ms": round(statistics.median(switching), 3), "enter_same_median_ms": round(statistics.median(same), 3)}


def tps(rows: list[dict]) -> float:
    """Decode tokens per second over all requests: tokens after the first, over the time between first and last."""
    return sum(r["tokens"] - 1 for r in rows if r["tokens"] > 1) / max(sum(r["decode"] for r in rows if r["tokens"] > 1), 1e-9)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def load_run(url: str, models: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def client_loop(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client() as c:
            while time.perf_counter() < stop_at:
                try:
                    row = stream_chat(c, url, rng.choice(models), rng.choice(PROMPTS), max_tokens)
                    with lock:
                        latencies.append(row["total"])
                except Exception as e:  # every failure is counted and reported, never hidden
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "p50_s": pct(latencies, 0.5) if latencies else None,
            "p95_s": pct(latencies, 0.95) if latencies else None, "requests_per_s": len(latencies) / wall, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--port", type=int, default=8917)
    ap.add_argument("--rounds", type=int, default=2, help="served and raw rounds, alternating")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--raw-worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_worker:
        raw_worker(args.raw_worker)
        return

    from credo.base import load_base
    from credo.layers import compile_layer, save_layer
    from credo.manifesto import Manifesto
    from credo.runtime.precision import machine_header

    machine, machine_line = machine_header()
    print(machine_line, flush=True)
    base = load_base(None)
    work = Path(tempfile.mkdtemp(prefix="credo-bench-serve-"))
    layers = work / "layers"
    ids = {}
    for stem in ["pirate", "terse"]:
        m = Manifesto.from_file(ROOT / "examples" / f"{stem}.md")
        layer = compile_layer(m, base, "cache", name=f"{stem}-cache")
        save_layer(layer, layers / layer.name)
        ids[stem] = layer
    pirate_ctx = ids["pirate"].context(base)
    n_ctx = 4096
    full = [pirate_ctx + base.format_chat([{"role": "user", "content": p}]) for p in PROMPTS]
    prompts_file = work / "raw_prompts.json"
    prompts_file.write_text(json.dumps({"gguf": str(base.gguf), "prompts": full, "max_tokens": args.max_tokens, "threads": args.threads, "n_ctx": n_ctx}))
    url = f"http://127.0.0.1:{args.port}/v1"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "credo"), "serve", "--layers-dir", str(layers), "--port", str(args.port), "--engine", "llamacpp",
         "--threads", str(args.threads), "--ctx", str(n_ctx), "--no-fidelity"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 300
        while True:
            try:
                if httpx.get(url.replace("/v1", "/health"), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"credo serve did not start: {server.stderr.read() if server.poll() is not None else 'timeout'}")
            time.sleep(0.5)
        model = "gemma-3-270m@pirate-cache"
        with httpx.Client() as c:
            stream_chat(c, url, model, "Warm up.", 8)
            # Raw llama.cpp runs in its own fresh process (no torch in it), alternating with served rounds,
            # so both meet the same load from anything else on the machine.
            served, raw = [], []
            for _ in range(args.rounds):
                served += [stream_chat(c, url, model, p, args.max_tokens) for p in PROMPTS]
                raw += run_raw_process(prompts_file)
        # Identity switching: single-token requests, each with a new prompt, same identity vs alternating identities.
            same, switch = [], []
            for rnd in range(3):
                for i, p in enumerate(PROMPTS):
                    q = f"{p} ({rnd})"
                    same.append(stream_chat(c, url, model, q, 1)["total"])
                for i, p in enumerate(PROMPTS):
                    q = f"{p} [{rnd}]"
                    switch.append(stream_chat(c, url, ["gemma-3-270m@pirate-cache", "gemma-3-270m@terse-cache"][i % 2], q, 1)["total"])
        load = load_run(url, ["gemma-3-270m", "gemma-3-270m@pirate-cache", "gemma-3-270m@terse-cache"], args.clients, args.load_seconds, 32)
    finally:
        server.terminate()
        server.wait(timeout=30)
    mechanism = switch_mechanism(base, {f"{k}-cache": v for k, v in ids.items()}, threads=args.threads)
    shutil.rmtree(work, ignore_errors=True)

    figures = {
        "served_tokens_per_s": round(tps(served), 2),
        "raw_tokens_per_s": round(tps(raw), 2),
        "ratio": round(tps(served) / tps(raw), 3),
        "served_ttft_median_ms": round(1000 * statistics.median(r["ttft"] for r in served), 1),
        "raw_ttft_median_ms": round(1000 * statistics.median(r["ttft"] for r in raw), 1),
        "served_tokens": [r["tokens"] for r in served],
        "raw_tokens": [r["tokens"] for r in raw],
        "one_token_request_same_identity_median_ms": round(1000 * statistics.median(same), 2),
        "one_token_request_switching_median_ms": round(1000 * statistics.median(switch), 2),
        "switch_cost_ms": round(1000 * (statistics.median(switch) - statistics.median(same)), 2),
        "switch_mechanism": mechanism,
        "load": load,
        "threads": args.threads,
        "machine": machine,
    }
    print(json.dumps(figures, indent=2))
    print(f"served/raw tokens/s: {figures['ratio']:.3f} (target >= 0.85); identity switch adds {figures['switch_cost_ms']:.2f} ms end to end over HTTP, "
          f"{mechanism['enter_switching_median_ms']:.2f} ms in the engine (target <= 5); "
          f"load: {load['requests']} requests, {load['errors']} errors, p50 {load['p50_s']:.2f} s, p95 {load['p95_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
