"""The `credo` command line. Each command calls one library function; CredoErrors become one line and exit code 2."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from credo.errors import CredoError
from credo.eval.suites.base import SUITES
from credo.layers import compile_layer, save_layer
from credo.layers.folder import check_target, list_layers, load_layer, read_info
from credo.layers.registry import KINDS, check_compile
from credo.manifesto import Manifesto
from credo.plugins import commands
from credo.realistic import load_for
from credo.server.engines import ENGINES

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Align a language model by a written manifesto.")
layers_app = typer.Typer(no_args_is_help=True, help="Inspect compiled layer folders.")
app.add_typer(layers_app, name="layers")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_LAYERS_DIR = Path("layers")


PRECISION_HELP = "auto (what this machine runs faster: bf16 only where it measures faster), fp32 or bf16; default $CREDO_PRECISION, else auto."


def use_precision(precision: Optional[str]) -> None:
    """Apply a command's --precision for this process (None: $CREDO_PRECISION, else auto)."""
    from credo.runtime.precision import choose

    choose(precision)


def parse_settings(settings: list[str]) -> dict[str, str]:
    pairs = {}
    for item in settings:
        if "=" not in item:
            raise CredoError(f"--set takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


@app.command()
def compile(
    manifesto: Optional[Path] = typer.Argument(None, help="The manifesto (Markdown)."),
    kind: str = typer.Option("prompt", "--kind", "-k", help="Layer kind: prompt, cache, steer, distill, hyper, the retraining baselines sft and dpo, "
                                                                 "or a plug-in's (credo plugins lists them)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Layer folder to write (default: layers/NAME-KIND)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model: gemma-3-270m (default), a .gguf file or a HF folder."),
    settings: list[str] = typer.Option([], "--set", help="Kind setting as key=value (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing layer folder."),
    all_layers: bool = typer.Option(False, "--all", help="Recompile every layer in --layers-dir that was made for another base."),
    layers_dir: Path = typer.Option(DEFAULT_LAYERS_DIR, "--layers-dir", help="With --all: the folder of layer folders."),
    on: Optional[Path] = typer.Option(None, "--on", help="Compile on top of this layer folder (stacking); the result loads as one layer."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Training budget for kinds that train (distill, sft, dpo): 10m (minutes) or 200 (steps)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    realistic: Optional[Path] = typer.Option(None, "--realistic", help="Realistic set to report fidelity on (default: the manifesto's NAME.realistic.jsonl)."),
    no_realistic: bool = typer.Option(False, "--no-realistic", help="Skip the realistic-fidelity look after the compile."),
) -> None:
    """Compile a manifesto into an identity layer (or, with --all, recompile layers for a new base)."""
    use_precision(precision)
    from credo.base import load_base

    if all_layers:
        from credo.data.recompile import recompile_all

        for r in recompile_all(layers_dir, load_base(base)):
            out.print(f"{r.path.name}: {r.status}")
        return
    if manifesto is None:
        raise CredoError("give a manifesto to compile, or --all to recompile the layers in --layers-dir")

    m = Manifesto.from_file(manifesto)
    if budget is not None:
        settings = [*settings, f"budget={budget}"]
    check_compile(kind, parse_settings(settings), on)  # a bad kind, setting or lower layer fails before the model loads
    if realistic is not None and (no_realistic or on is not None):
        raise CredoError("--realistic is measured on a plain compile: drop --no-realistic / --on, or drop --realistic")
    found = None if no_realistic or on is not None else load_for(m, realistic)  # a bad set fails before the model loads
    name = (f"{manifesto.stem}-{kind}" if on is None else f"{on.name}+{manifesto.stem}-{kind}") if output is None else output.name
    folder = output or DEFAULT_LAYERS_DIR / name
    check_target(folder, force)  # an existing folder needs --force, and only a layer folder is ever replaced
    b = load_base(base)
    layer = compile_layer(m, b, kind, parse_settings(settings), name=name, on=on)
    if found is not None:
        from credo.eval.realistic import compile_figures

        layer.info.report.update(compile_figures(layer, b, found) or {})
    from credo.runtime.team import Team

    if not Team.of(b).main:  # under accelerate launch / torchrun every process trained the same layer: one writes it
        return
    save_layer(layer, folder, overwrite=force)
    out.print(f"compiled [bold]{m.name}[/bold] as [bold]{kind}[/bold] in {layer.info.compile_seconds:.1f}s "
              f"({layer.info.precision} on {layer.info.device}) -> {folder}")
    for key, value in layer.info.report.items():
        out.print(f"  {key}: {value}")
    from credo.layers.card import serving_line

    if line := serving_line(layer, folder):
        out.print(line, markup=False, highlight=False)
    from credo.eval.realistic import summary_line

    if line := summary_line(layer.info.report, kind):
        out.print(line)


def _engine(layer_dir: Optional[Path], base: Optional[str]):
    from credo.base import load_base
    from credo.runtime.torch_engine import TorchEngine

    spec = base
    if layer_dir is not None and spec is None:
        spec = read_info(layer_dir).base.get("spec")
    b = load_base(spec)
    layer = load_layer(layer_dir, b) if layer_dir is not None else None
    return TorchEngine(b, layer)


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What the user says."),
    layer: Optional[Path] = typer.Option(None, "--layer", "-l", help="Layer folder (none: the bare base)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (default: the one the layer was compiled for)."),
    max_tokens: int = typer.Option(128, "--max-tokens", "-n", min=1, max=4096),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0, help="0 is greedy."),
    seed: Optional[int] = typer.Option(None, "--seed"),
) -> None:
    """Answer one prompt, streaming the tokens."""
    engine = _engine(layer, base)
    for piece in engine.generate(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
def chat(
    layer: Optional[Path] = typer.Option(None, "--layer", "-l", help="Layer folder (none: the bare base)."),
    base: Optional[str] = typer.Option(None, "--base"),
    max_tokens: int = typer.Option(256, "--max-tokens", "-n", min=1, max=4096),
    temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0),
) -> None:
    """Talk with an identity; an empty line or Ctrl-D ends the chat."""
    engine = _engine(layer, base)
    history: list[dict[str, str]] = []
    name = engine.layer.name if engine.layer else engine.base.name
    err.print(f"[dim]chatting with {name}; empty line or Ctrl-D to quit[/dim]")
    while True:
        try:
            user = input("you> ").strip()
        except EOFError:
            break
        if not user:
            break
        history.append({"role": "user", "content": user})
        sys.stdout.write(f"{name}> ")
        answer = ""
        for piece in engine.generate(history, max_tokens=max_tokens, temperature=temperature):
            answer += piece
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": answer.strip()})


def shown(text: str) -> str:
    """A name as a table cell: control characters (a newline in a folder name) written out, rich markup escaped."""
    from rich.markup import escape

    return escape(text if text.isprintable() else repr(text)[1:-1])


@app.command()
def plugins() -> None:
    """List what is plugged in: layer kinds, eval suites, serving engines and command groups, and where each comes from."""
    from rich.table import Table

    table = Table("sort", "name", "module", "what it is")
    for registry in (KINDS, SUITES, ENGINES, commands):
        for name in registry.names():
            obj = registry.get(name)
            doc = (getattr(obj, "help", "") or obj.__doc__ or sys.modules[obj.__module__].__doc__ or "").strip().splitlines()
            table.add_row(registry.sort, name.rsplit(".", 1)[0] if registry is commands else name, obj.__module__, doc[0] if doc else "")
    out.print(table)


@layers_app.command("ls")
def layers_ls(directory: Path = typer.Argument(DEFAULT_LAYERS_DIR, help="Folder of layer folders.")) -> None:
    """List compiled layers with their kind, manifesto and base."""
    from rich.table import Table

    rows = list_layers(directory)
    if not rows:
        out.print(f"no layers in {directory}")
        return
    table = Table("layer", "kind", "manifesto", "base", "compiled", "seconds", "precision", "status")
    for path, info, status in rows:
        if info is None:
            table.add_row(shown(path.name), "", "", "", "", "", "", f"[red]{shown(status)}[/red]")
        else:
            table.add_row(
                shown(path.name), shown(info.kind), shown(str(info.manifesto.get("name", ""))), f"{info.base.get('name', '')} {info.base['sha256'][:12]}",
                info.created, f"{info.compile_seconds:.1f}", f"{info.precision} {info.device}".strip() or "-", status,
            )
    out.print(table)


@app.command()
def demo(
    manifesto: Path = typer.Option(Path("examples/pirate.md"), "--manifesto", "-m", help="Manifesto to compile."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Comma-separated kinds (default: every identity kind; "
                                        "the retraining baselines sft and dpo only when named)."),
    base: Optional[str] = typer.Option(None, "--base"),
    output: Path = typer.Option(Path("layers/demo"), "--output", "-o", help="Where the demo's layers go."),
    max_tokens: int = typer.Option(48, "--max-tokens", "-n", min=1, max=512),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
) -> None:
    """Compile one manifesto into every layer kind and print them side by side."""
    from credo.demo import run_demo

    use_precision(precision)
    run_demo(manifesto, kinds.split(",") if kinds else None, base, output, max_tokens, out)


def _add_command_groups() -> None:
    """Each feature's commands (eval, serve, data, and any plug-in's) live with the feature; see `credo.plugins`."""
    for name in commands.names():
        commands.get(name)(app)


def _click_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """The usage-error, exit and abort exceptions of typer's own bundled click (typer >= 0.17) and of click itself."""
    import typer.exceptions as bundled

    usage, exits, aborts = [getattr(bundled, "TyperException", None)], [typer.Exit], [getattr(bundled, "Abort", None)]
    try:
        import click

        usage.append(click.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(t for t in usage if t), tuple(exits), tuple(t for t in aborts if t)


def _usage_line(e: Exception) -> str:
    """A usage error as one line, with where to read more: "No such option: --x (see 'credo compile --help')"."""
    message = " ".join(str(e.format_message() if hasattr(e, "format_message") else e).split())
    ctx = getattr(e, "ctx", None)
    return f"{message} (see '{ctx.command_path} --help')" if ctx is not None else message


def main() -> None:
    """Run the command line. A user's mistake is one line on stderr: CredoErrors and usage errors exit 2, Ctrl-C 130.

    typer's own entry point turns Ctrl-C into a return value of 130 and raises its bundled click's exceptions, which are
    not click's; so the command runs here directly, and every way out is decided below.
    """
    usage_errors, exits, aborts = _click_errors()
    try:
        _add_command_groups()  # a plug-in that fails to load is a one-line error like any other
        command = typer.main.get_command(app)
        with command.make_context("credo", sys.argv[1:]) as ctx:
            command.invoke(ctx)
    except CredoError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt as e:
        hint = str(e).strip()  # credo.errors.Interrupted says how to resume
        sys.stderr.write(f"interrupted{': ' + hint if hint else ''}\n")
        sys.exit(130)
    except exits as e:
        sys.exit(getattr(e, "exit_code", 0))
    except aborts:
        sys.stderr.write("aborted\n")
        sys.exit(1)
    except usage_errors as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `credo` or `credo data` alone: the help is the answer
            e.show()
        else:
            sys.stderr.write(f"error: {_usage_line(e)}\n")
        sys.exit(2)


def entry() -> None:
    """The `credo` program: main(), and a Ctrl-C leaves at once with 130, since the interpreter's shutdown (multiprocess's
    exit joins of data workers) could still end it as killed by SIGINT. Tests call main(), which only raises."""
    try:
        main()
    except SystemExit as e:
        if e.code == 130:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second interrupt during the exit would end it as killed, not 130
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise


if __name__ == "__main__":
    entry()
