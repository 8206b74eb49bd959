"""The `credo serve` command. Only typer is imported here, so `credo --help` stays fast; the server loads on use."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from credo.errors import CredoError
from credo.plugins import commands
from credo.server.engines import ENGINES, make_engine


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: Optional[str]) -> None:
    """Anything reachable from another machine must ask for a key."""
    if not is_loopback(host) and not api_key:
        raise CredoError(f"--host {host} makes the server reachable from other machines; give --api-key KEY as well")


@commands.register
def add_commands(app: typer.Typer) -> None:
    @app.command()
    def serve(
        layers_dir: Path = typer.Option(Path("layers"), "--layers-dir", "-d", help="Folder of layer folders: each one is an identity."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --api-key."),
        port: int = typer.Option(8000, "--port", "-p", min=1, max=65535),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="CREDO_API_KEY", help="Require 'Authorization: Bearer KEY'."),
        base: Optional[str] = typer.Option(None, "--base", help="Base model: gemma-3-270m (default), a .gguf file or a HF folder."),
        engine: str = typer.Option("auto", "--engine", help="auto (llama.cpp on a CPU when the base has a GGUF, else torch), "
                                                                  "llamacpp, torch, or a plug-in engine's name."),
        n_ctx: int = typer.Option(4096, "--ctx", min=256, max=131072, help="Context window per request (tokens)."),
        threads: Optional[int] = typer.Option(None, "--threads", min=1, help="llama.cpp threads (default: all cores)."),
        max_tokens: int = typer.Option(1024, "--max-tokens-limit", min=1, help="Largest max_tokens a request may ask for."),
        max_body: int = typer.Option(1 << 20, "--max-body-bytes", min=1024, help="Largest request body accepted."),
        fidelity: bool = typer.Option(True, "--fidelity/--no-fidelity", help="Measure fidelity after compiling from the API."),
        max_seconds: float = typer.Option(300.0, "--max-request-seconds", min=1.0,
                                          help="A generation stops this long after its request arrived (it holds the only worker)."),
        precision: Optional[str] = typer.Option(None, "--precision", help="Precision of the compiles asked for through the API: "
                                                "auto (what this machine runs faster), fp32 or bf16; default $CREDO_PRECISION, else auto."),
    ) -> None:
        """Serve the base and every identity in LAYERS_DIR through an OpenAI-compatible API, with a playground at /."""
        from credo.runtime.precision import choose

        check_exposure(host, api_key)
        if engine != "auto":
            ENGINES.get(engine)  # a typo fails here, before the model loads
        choose(precision)
        if layers_dir.exists() and not layers_dir.is_dir():
            raise CredoError(f"--layers-dir {layers_dir} is not a folder")
        import uvicorn

        from credo.base import load_base
        from credo.server.app import ServeSettings, create_app

        b = load_base(base)
        eng = make_engine(engine, b, n_ctx=n_ctx, threads=threads)
        settings = ServeSettings(layers_dir, api_key, max_body, max_tokens, min(256, max_tokens), fidelity, max_seconds)
        server_app = create_app(b, eng, settings)
        bad = [i for i in server_app.state.identities.items.values() if i.status != "ready"]
        for ident in bad:
            typer.echo(f"skipping identity {ident.name}: {ident.error}", err=True)
        typer.echo(f"serving {b.name} through {eng.name} with {len(server_app.state.identities.items) - len(bad)} identities "
                   f"on http://{host}:{port}/ (playground at /)", err=True)
        uvicorn.run(server_app, host=host, port=port, log_level="warning")
