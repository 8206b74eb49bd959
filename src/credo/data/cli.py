"""`credo data …`: the data pipeline's commands. Each calls one library function; imports stay inside for a fast --help."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from credo.plugins import commands

data_app = typer.Typer(no_args_is_help=True, help="Clean, deduplicate and tag text for the base, and continue its pre-training.")

_EXEC = typer.Option("local", "--executor", help="datatrove executor: local, slurm or ray.")
_TASKS = typer.Option(1, "--tasks", min=1, help="Shards to split the input into (files are the unit).")
_WORKERS = typer.Option(1, "--workers", min=1, help="Shards run at once (local executor).")
_FORCE = typer.Option(False, "--force", help="Replace OUT if it exists and credo wrote it (never another folder).")
_TEXT_KEY = typer.Option("text", "--text-key", help="Field holding the text in JSONL/Parquet input.")
_VERBOSE = typer.Option(False, "--verbose", help="Show datatrove's own logs.")


def _cfg(executor: str, tasks: int, workers: int, verbose: bool):
    from credo.data.executor import RunConfig

    return RunConfig(backend=executor, tasks=tasks, workers=workers, verbose=verbose)


def _resumable(run: Callable[[], dict]) -> dict:
    """Ctrl-C anywhere in a datatrove command (imports, planning, commit) says how to resume, as the stages do."""
    from credo.data.executor import resumable

    return resumable(run)


def _submitted(report: dict) -> None:
    if report.get("submitted"):
        typer.echo(f"jobs submitted; when they finish, run the same command again to commit the output ({report['work']})")


@data_app.command("clean")
def clean(
    inp: Path = typer.Argument(..., help="Input: a JSONL/Parquet/text file or a folder of them."),
    out: Path = typer.Argument(..., help="Output folder (data/, removed/, report.json)."),
    quality: bool = typer.Option(True, "--quality/--no-quality", help="Apply the Gopher/C4/FineWeb heuristics."),
    text_key: str = _TEXT_KEY, executor: str = _EXEC, tasks: int = _TASKS, workers: int = _WORKERS,
    force: bool = _FORCE, verbose: bool = _VERBOSE,
) -> None:
    """Repair Unicode, drop assistant boilerplate and low-quality documents, saying which rule fired."""
    from credo.data.clean import run_clean

    _submitted(_resumable(lambda: run_clean(inp, out, _cfg(executor, tasks, workers, verbose), quality=quality,
                                           text_key=text_key, force=force)))


@data_app.command("dedup")
def dedup(
    inp: Path = typer.Argument(..., help="Input: a JSONL/Parquet/text file or a folder of them."),
    out: Path = typer.Argument(..., help="Output folder."),
    index: Optional[Path] = typer.Option(None, "--index", help="Persistent dedup index (default: dedup-index beside OUT)."),
    text_key: str = _TEXT_KEY, executor: str = _EXEC, tasks: int = _TASKS, workers: int = _WORKERS,
    force: bool = _FORCE, verbose: bool = _VERBOSE,
) -> None:
    """Remove exact and near duplicates, within this batch and against every batch in the index."""
    from credo.data.dedup import run_dedup

    idx = index or out.expanduser().absolute().parent / "dedup-index"
    _submitted(_resumable(lambda: run_dedup(inp, out, idx, _cfg(executor, tasks, workers, verbose), text_key=text_key,
                                           force=force)))


@data_app.command("tag")
def tag(
    inp: Path = typer.Argument(..., help="Input: a JSONL/Parquet/text file or a folder of them."),
    out: Path = typer.Argument(..., help="Output folder."),
    source: Optional[str] = typer.Option(None, "--source", help="Source of every document (default: its field or folder)."),
    date: Optional[str] = typer.Option(None, "--date", help="Creation date (default: its field or a date in the file name)."),
    text_key: str = _TEXT_KEY, executor: str = _EXEC, tasks: int = _TASKS, workers: int = _WORKERS,
    force: bool = _FORCE, verbose: bool = _VERBOSE,
) -> None:
    """Add dolma fields: id, text, source, added, created, metadata."""
    from credo.data.tag import run_tag

    _submitted(_resumable(lambda: run_tag(inp, out, source, date, _cfg(executor, tasks, workers, verbose), text_key=text_key,
                                         force=force)))


@data_app.command("ingest")
def ingest(
    inp: Path = typer.Argument(..., help="Tagged documents (output of `credo data tag`)."),
    output: Path = typer.Option(..., "--output", "-o", help="New base folder to write."),
    base: Optional[str] = typer.Option(None, "--base", help="Base to continue from (default: gemma-3-270m)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimizer steps (default: one pass over the data)."),
    seq_len: int = typer.Option(256, "--seq-len", min=8, max=8192, help="Tokens per training sequence."),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    lr: float = typer.Option(2e-5, "--lr", min=0.0),
    cooldown: float = typer.Option(0.1, "--cooldown", min=0.0, max=1.0, help="Final share of steps on plain text (MeCo)."),
    metadata: bool = typer.Option(True, "--metadata/--no-metadata", help="Prefix Source:/Date: lines before the cooldown."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of an interrupted run."),
    layers_dir: Path = typer.Option(Path("layers"), "--layers-dir", help="Layers to check against the new base."),
    seed: int = typer.Option(0, "--seed"),
    force: bool = _FORCE, text_key: str = _TEXT_KEY,
) -> None:
    """Continue pre-training the base on tagged text (MeCo-style metadata, plain-text cooldown) into a new base folder."""
    from credo.data.ingest import IngestConfig, run_ingest
    from credo.data.recompile import stale_layers

    cfg = IngestConfig(steps=steps, seq_len=seq_len, batch_size=batch_size, lr=lr, cooldown=cooldown, metadata=metadata,
                       checkpoint_every=checkpoint_every, seed=seed, text_key=text_key)
    meta = run_ingest(inp, base, output, cfg, resume=resume, force=force)
    typer.echo(f"new base {output} sha256 {meta['sha256'][:12]} (parent {meta['parent_sha256'][:12]}), "
               f"loss {meta['ingest']['loss_first']:.3f} -> {meta['ingest']['loss_last']:.3f}")
    stale = stale_layers(layers_dir, meta["sha256"])
    if stale:
        typer.echo(f"{len(stale)} layer(s) in {layers_dir} were compiled for another base and need recompiling "
                   f"(`credo compile --all --base {output}`):")
        for path, info in stale:
            typer.echo(f"  {path.name} ({info.kind}, base {info.base['sha256'][:12]})")


@commands.register
def add_commands(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
