"""`credo eval`: the command; the work is `credo.eval.runner.run_eval` and `credo.eval.report.write_report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from credo.eval.report import print_tables, summarise, write_report
from credo.plugins import commands


@commands.register
def add_commands(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    more_layers: Optional[list[Path]] = typer.Argument(None, help="More layer folders (so `--layers layers/*` works)."),
    layers: list[Path] = typer.Option([], "--layers", "-l", help="Layer folder to evaluate (repeatable; a shell glob works)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for report.json, report.md and the plots."),
    suites: list[str] = typer.Option([], "--suites", "-s", help="Suites to run, comma-separated or repeated (default: all)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="At most N items per suite (a quick run)."),
    size: Optional[int] = typer.Option(None, "--size", min=1, help="N items per suite instead of each suite's default (a fuller run)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluation data folder (default: $CREDO_DATA, else ../shared/data)."),
    items: list[Path] = typer.Option([], "--items", help="Your own JSONL items in a shared-data format (repeatable)."),
    manifesto: Optional[Path] = typer.Option(None, "--manifesto", "-m", help="Measure every layer against this manifesto."),
    realistic: Optional[Path] = typer.Option(None, "--realistic", help="Realistic set (JSONL of user messages) to measure on "
                                                                                                    "(default: the manifesto's NAME.realistic.jsonl)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (default: the one the layers were compiled for)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch CPU threads (1 is fastest on a shared machine)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
) -> None:
    """Score base, teacher and every layer on the same items; write one report and print its table."""
    import sys

    from rich.console import Console

    from credo.eval.progress import Progress
    from credo.eval.runner import EvalConfig, run_eval

    out, err = Console(width=None if sys.stdout.isatty() else 240), Console(stderr=True)
    names = [n.strip() for s in suites for n in s.split(",") if n.strip()] or None
    config = EvalConfig(
        layers=list(layers) + list(more_layers or []), suites=names, limit=limit, size=size, data=data, user_files=list(items),
        reference=manifesto, realistic=realistic, base=base, progress=not quiet, threads=threads, resume=output,
    )
    report = run_eval(config, log=(lambda s: None) if quiet else (lambda s: err.print(f"[dim]{s}[/dim]", highlight=False)))
    files = write_report(report, output)
    Progress.clear(output)
    print_tables(summarise(report), out)
    out.print(f"wrote {', '.join(str(f) for f in files)} in {report['timing']['total']:.0f}s")
