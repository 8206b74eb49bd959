"""Scale-out: the trained kinds under `accelerate launch` on two CPU processes (gloo), as one process would train them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from credo.layers import compile_layer, load_layer
from credo.runtime.torch_engine import TorchEngine

pytest.importorskip("trl")
pytestmark = pytest.mark.usefixtures("one_thread", "fresh_cache")

SETTINGS = dict(prompts="4", batch="2", answer_tokens="4", lr="1e-2", r="4", alpha="8", heldout="0", control="false", checkpoint_every="1",
                warmup="1", budget="3")
DISTILL = SETTINGS | {"topk": "8"}
SFT = SETTINGS | {"budget": "0.05m"}  # a budget in minutes: the processes must stop at one step and keep one schedule

# What every process runs: credo's public API, unchanged; the main process alone saves, as with any accelerate script.
SCRIPT = """
import hashlib, json, sys
from pathlib import Path

from accelerate import PartialState

from credo.base import tiny_base
from credo.layers import compile_layer, save_layer
from credo.manifesto import Manifesto

manifesto, out, settings = Manifesto.from_file(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
base = tiny_base(0, sliding_window=4096)
state = PartialState(cpu=True)
for kind in ("distill", "sft"):
    layer = compile_layer(manifesto, base, kind, settings[kind])
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in layer.weights.parameters())).hexdigest()
    print("RESULT " + json.dumps({"kind": kind, "rank": state.process_index, "size": state.num_processes, "digest": digest,
                                  "report": layer.info.report}), flush=True)
    if state.is_main_process:
        save_layer(layer, out / kind)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distill_and_sft_train_on_two_processes_as_on_one(wide, pirate, tmp_path):
    """Both ranks train the same weights, the main one writes each layer once, and the distill layer is the one a
    single process trains (the batch is split, the gradients summed: only float rounding differs)."""
    out = tmp_path / "layers"
    env = os.environ | {"CREDO_CACHE": str(tmp_path / "launch-cache"), "CREDO_PRECISION": "fp32", "CUDA_VISIBLE_DEVICES": "",
                        "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    (tmp_path / "train.py").write_text(SCRIPT)
    # --multi_gpu on a machine without a GPU is accelerate's two-process CPU launch (torchrun + gloo); --cpu would start one
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    done = subprocess.run([*launch, str(tmp_path / "train.py"), pirate.source, str(out), json.dumps({"distill": DISTILL, "sft": SFT})],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted((r["kind"], r["rank"], r["size"]) for r in results) == [("distill", 0, 2), ("distill", 1, 2), ("sft", 0, 2), ("sft", 1, 2)]
    for kind in ("distill", "sft"):
        ranks = [r for r in results if r["kind"] == kind]
        assert ranks[0]["digest"] == ranks[1]["digest"]  # shared gradients, one clock: both processes hold the same adapter
        assert ranks[0]["report"]["steps"] == ranks[1]["report"]["steps"] >= 1 and ranks[0]["report"]["resumed_from_step"] == 0
    assert [r["report"]["steps"] for r in results if r["kind"] == "distill"] == [3, 3]
    assert {r["report"]["stopped"] for r in results if r["kind"] == "sft"} == {"budget spent (0.05m)"}
    assert sorted(p.name for p in out.iterdir()) == ["distill", "sft"]  # written once: no second folder, no temporary left
    work = tmp_path / "launch-cache" / "work"
    assert not [p for p in work.rglob("*") if ".credo-" in p.name]  # every checkpoint and answer file was written whole
    assert len(list(work.rglob("checkpoint.safetensors"))) == 2  # one per compile

    prompt, answer = "Hello! Who are you?", "Arr matey"
    bare = TorchEngine(wide).answer_logits(prompt, answer)[0]
    layers = {kind: load_layer(out / kind, wide) for kind in ("distill", "sft")}
    for kind, layer in layers.items():
        assert layer.kind == kind and layer.info.report["steps"] >= 1
        assert max(float(b.abs().max()) for b in layer.weights.b.values()) > 1e-3  # B starts at zero: it was trained
        assert (TorchEngine(wide, layer).answer_logits(prompt, answer)[0] - bare).abs().max() > 1e-3

    one = compile_layer(pirate, wide, "distill", DISTILL)  # the same compile in this one process
    two = layers["distill"]
    assert one.info.report["train_kl_first"] == pytest.approx(two.info.report["train_kl_first"], rel=1e-3)
    assert one.info.report["train_kl_last"] == pytest.approx(two.info.report["train_kl_last"], rel=1e-3)
    for m in one.weights.modules:
        torch.testing.assert_close(two.weights.b[m], one.weights.b[m], atol=1e-4, rtol=1e-3)


def test_a_team_of_one_is_a_single_process(tiny):
    from credo.runtime.team import Team

    team = Team.of(tiny)
    assert (team.rank, team.size, team.main) == (0, 1, True)
    assert team.shard([1, 2, 3]) == [1, 2, 3] and team.agree(2.5) == 2.5
    t = torch.tensor([1.0, 2.0])
    assert team.total(t) is t
    halves = [Team(rank, 2).shard(list(range(5))) for rank in (0, 1)]
    assert halves == [[0, 2, 4], [1, 3]]


def test_a_batch_the_processes_cannot_share_fails_in_one_line():
    from credo.errors import CredoError
    from credo.layers.kinds.retrain import per_process_batch
    from credo.layers.kinds.sft import SftConfig

    assert per_process_batch(SftConfig(batch=4), 2) == 2 and per_process_batch(SftConfig(batch=3), 1) == 3
    with pytest.raises(CredoError, match="batch 3 does not split evenly over 2 processes"):
        per_process_batch(SftConfig(batch=3), 2)
