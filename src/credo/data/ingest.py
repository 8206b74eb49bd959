"""`credo data ingest`: continued pre-training of the base on tagged documents, written out as a new base.

Following MeCo, documents carry `Source: …` and `Date: …` lines for most of the run and are plain text for the final
cooldown, so the base learns provenance yet still works without it. The run checkpoints model and optimizer as
safetensors (plus JSON) every N steps, so `--resume` continues an interrupted run exactly where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from credo.data.errors import IngestError
from credo.errors import Interrupted
from credo.fsutil import NotReplaceable, atomic_dir, check_replaceable, remove_dir

CHECKPOINT = "checkpoint"


@dataclass
class IngestConfig:
    steps: int | None = None  # None: one pass over the data
    seq_len: int = 256
    batch_size: int = 4
    lr: float = 2e-5
    cooldown: float = 0.1
    metadata: bool = True
    checkpoint_every: int = 50
    seed: int = 0
    text_key: str = "text"
    warmup: int = 10

    def check(self) -> None:
        if not 0.0 <= self.cooldown <= 1.0:
            raise IngestError("--cooldown must be between 0 and 1")
        if self.seq_len < 8 or self.batch_size < 1 or self.lr < 0 or (self.steps is not None and self.steps < 1):
            raise IngestError("--seq-len >= 8, --batch-size >= 1, --lr >= 0 and --steps >= 1 are required")


def with_metadata(meta: dict[str, Any], text: str) -> str:
    """The MeCo-style prefix: a Source line and a Date line (each only when known), a blank line, then the text."""
    lines = []
    if meta.get("source"):
        lines.append(f"Source: {meta['source']}")
    if meta.get("created"):
        lines.append(f"Date: {str(meta['created'])[:10]}")
    return ("\n".join(lines) + "\n\n" + text) if lines else text


def _documents(inp: str | Path, text_key: str) -> Iterator[tuple[dict[str, Any], str]]:
    from credo.data.io import CorpusReader, plan_inputs

    folder, files = plan_inputs(inp)
    reader = CorpusReader(str(folder), files, text_key=text_key, bad_folder=None, doc_progress=False)
    for doc in reader.run(None, 0, 1):
        yield doc.metadata, doc.text


class Blocks:
    """Packs documents into fixed-length token blocks, streaming; which documents get the metadata prefix depends on
    the step the block belongs to, so the same stream is rebuilt exactly on resume."""

    def __init__(self, inp: str | Path, base: Any, cfg: IngestConfig, meta_steps: int) -> None:
        self.inp, self.base, self.cfg, self.meta_steps = inp, base, cfg, meta_steps

    def __iter__(self) -> Iterator[list[int]]:
        eos = self.base.tokenizer.eos_token_id
        n = self.cfg.seq_len + 1  # inputs and shifted labels come from one block
        block_i = 0
        while True:  # cycle over the data when --steps asks for more than one pass
            buf: list[int] = []
            any_doc = False
            for meta, text in _documents(self.inp, self.cfg.text_key):
                any_doc = True
                step = block_i // self.cfg.batch_size
                if self.cfg.metadata and step < self.meta_steps:
                    text = with_metadata(meta, text)
                buf += self.base.encode(text, bos=True) + ([eos] if eos is not None else [])
                while len(buf) >= n:
                    yield buf[:n]
                    buf = buf[n:]
                    block_i += 1
            if not any_doc:
                raise IngestError(f"no documents in {self.inp}")
            if block_i == 0:
                raise IngestError(f"{self.inp} holds fewer than {n} tokens: lower --seq-len or add text")


def count_blocks(inp: str | Path, base: Any, cfg: IngestConfig) -> int:
    """How many blocks one pass over the data makes (with metadata prefixes: the longer form)."""
    total = 0
    for meta, text in _documents(inp, cfg.text_key):
        total += len(base.encode(with_metadata(meta, text) if cfg.metadata else text, bos=True)) + 1
    return total // (cfg.seq_len + 1)


def _save_checkpoint(work: Path, model: Any, opt: Any, state: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file, save_model

    tensors: dict[str, torch.Tensor] = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        st = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                tensors[f"{i}.{key}"] = st[key].detach().cpu().contiguous()
        if "step" in st:
            tensors[f"{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    with atomic_dir(work / CHECKPOINT, overwrite=True) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def _load_checkpoint(work: Path, model: Any, opt: Any) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file, load_model

    ck = work / CHECKPOINT
    try:
        state = json.loads((ck / "state.json").read_text())
        load_model(model, str(ck / "model.safetensors"))
        tensors = load_file(str(ck / "optimizer.safetensors"))
    except (OSError, ValueError, RuntimeError) as e:
        raise IngestError(f"checkpoint in {ck} cannot be read ({type(e).__name__}); start again without --resume") from None
    for i, p in enumerate(opt.param_groups[0]["params"]):
        if f"{i}.exp_avg" in tensors:
            opt.state[p] = {
                "exp_avg": tensors[f"{i}.exp_avg"].to(p.device),
                "exp_avg_sq": tensors[f"{i}.exp_avg_sq"].to(p.device),
                "step": torch.tensor(float(tensors[f"{i}.step"].item())),
            }
    return state


def work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.ingest-work"


def run_ingest(inp: str | Path, base_spec: str | None, output: str | Path, cfg: IngestConfig | None = None,
               resume: bool = False, force: bool = False, show: bool = True) -> dict[str, Any]:
    """Train, then write the new base folder (HF format + credo-base.json with its own and its parent's hash)."""
    import torch
    from tqdm import tqdm

    from credo.base import BASE_META, load_base, weights_sha256
    from credo.data.io import plan_inputs

    cfg = cfg or IngestConfig()
    cfg.check()
    output = Path(output).expanduser().absolute()
    plan_inputs(inp)  # a clear error for missing input before the model loads
    if output.exists() and not force:
        raise IngestError(f"{output} already exists (pass --force to replace it)")
    try:
        check_replaceable(output, BASE_META)  # --force replaces a base folder credo wrote, never another folder
    except NotReplaceable as e:
        raise IngestError(str(e)) from None
    work = work_dir(output)
    if resume and not (work / CHECKPOINT / "state.json").exists():
        raise IngestError(f"nothing to resume: no checkpoint in {work}")
    if not resume and work.exists():
        shutil.rmtree(work)

    base = load_base(base_spec)
    if base.spec and Path(base.spec).expanduser().absolute() == output:
        raise IngestError("the new base must go to a new folder, not over the base it continues")
    parent_sha = base.sha256
    model, tok = base.model, base.tokenizer
    if tok.eos_token_id is None:
        raise IngestError(f"base {base.name} has no end-of-text token to separate documents")
    torch.manual_seed(cfg.seed)
    steps = cfg.steps or max(1, count_blocks(inp, base, cfg) // cfg.batch_size)
    cool = max(1 if cfg.cooldown > 0 else 0, round(steps * cfg.cooldown))  # at least one plain step when asked for
    meta_steps = max(0, steps - cool) if cfg.metadata else 0
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = min(cfg.warmup, max(1, steps // 10))
    fingerprint = {"input": str(Path(inp).absolute()), "parent_sha256": parent_sha, "config": asdict(cfg), "steps": steps}
    state: dict[str, Any] = {"step": 0, "losses": [], **fingerprint}
    if resume:
        state = _load_checkpoint(work, model, opt)
        if {k: state.get(k) for k in fingerprint} != fingerprint:
            raise IngestError("the checkpoint was made with another input, base or settings; start again without --resume")

    model.train()
    start = time.perf_counter()
    blocks = iter(Blocks(inp, base, cfg, meta_steps))
    for _ in range(state["step"] * cfg.batch_size):  # replay the stream up to where the checkpoint stopped
        next(blocks)
    bar = tqdm(total=steps, initial=state["step"], desc="ingest", unit="step", disable=not show)
    try:
        while state["step"] < steps:
            batch = torch.tensor([next(blocks) for _ in range(cfg.batch_size)], dtype=torch.long, device=base.device)
            out = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone())
            for group in opt.param_groups:  # linear warm-up, then constant: a function of the step alone, so resume matches
                group["lr"] = cfg.lr * min(1.0, (state["step"] + 1) / warmup)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["losses"].append(round(float(out.loss.item()), 5))
            bar.update(1)
            bar.set_postfix(loss=f"{state['losses'][-1]:.3f}", meta="on" if state["step"] <= meta_steps else "off")
            if state["step"] % cfg.checkpoint_every == 0 and state["step"] < steps:
                _save_checkpoint(work, model, opt, state)
    except KeyboardInterrupt:
        saved = work / CHECKPOINT / "state.json"
        step = json.loads(saved.read_text()).get("step") if saved.is_file() else None
        raise Interrupted(f"run the same command with --resume to continue from step {step}" if step else
                          "no checkpoint yet: run the same command again to start over") from None
    finally:
        bar.close()
    model.eval()
    sha = weights_sha256(model)
    losses = state["losses"]
    k = max(1, min(5, len(losses) // 4))
    meta = {
        "name": output.name,
        "sha256": sha,
        "parent_sha256": parent_sha,
        "parent_name": base.name,
        "parent_spec": base.spec,
        "ingest": {
            "input": str(Path(inp).absolute()), "steps": steps, "metadata_steps": meta_steps, "seq_len": cfg.seq_len,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "tokens": steps * cfg.batch_size * cfg.seq_len,
            "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k, "losses": losses,
            "seconds_this_session": round(time.perf_counter() - start, 1),
        },
    }
    with atomic_dir(output, overwrite=force, replaces=BASE_META) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / BASE_META).write_text(json.dumps(meta, indent=2))
    remove_dir(work)  # out of sight in one rename, then deleted: a kill meanwhile leaves a sibling the next write sweeps
    return meta
