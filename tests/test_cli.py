"""The CLI as a user runs it, on the tiny base (`--base tiny:0`): commands, exit codes and one-line errors."""

import json
import sys
from pathlib import Path

import pytest

from credo import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["credo", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_compile_generate_and_list(workdir, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "compile", str(EXAMPLES / "pirate.md"), "--kind", "cache", "--base", "tiny:0")
    assert code == 0 and "layers/pirate-cache" in out
    info = json.loads((workdir / "layers" / "pirate-cache" / "layer.json").read_text())
    assert info["kind"] == "cache" and info["base"]["spec"] == "tiny:0"

    code, out, _ = run(monkeypatch, capsys, "generate", "--layer", "layers/pirate-cache", "--max-tokens", "5", "Hello")
    assert code == 0 and out.endswith("\n") and len(out.strip()) > 0

    code, out, _ = run(monkeypatch, capsys, "layers", "ls")
    assert code == 0 and "pirate-cache" in out and "cache" in out and "ok" in out


def test_chat_reads_turns_until_an_empty_line(workdir, monkeypatch, capsys):
    run(monkeypatch, capsys, "compile", str(EXAMPLES / "terse.md"), "--kind", "prompt", "--base", "tiny:0")
    answers = iter(["hello", "again", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code, out, _ = run(monkeypatch, capsys, "chat", "--layer", "layers/terse-prompt", "--max-tokens", "4")
    assert code == 0 and out.count("terse-prompt>") == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["compile", "MISSING.md", "--base", "tiny:0"], "does not exist"),
        (["compile", "EMPTY.md", "--base", "tiny:0"], "is empty"),
        (["compile", "BINARY.md", "--base", "tiny:0"], "binary"),
        (["compile", str(EXAMPLES / "pirate.md"), "--kind", "telepathy", "--base", "tiny:0"], "unknown layer kind 'telepathy'"),
        (["compile", str(EXAMPLES / "pirate.md"), "--set", "nokey", "--base", "tiny:0"], "key=value"),
        (["generate", "--layer", "nowhere", "hi"], "does not exist"),
        (["generate", "--base", "/no/such/model", "hi"], "not found"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(workdir, monkeypatch, capsys, args, message):
    (workdir / "EMPTY.md").write_text("")
    (workdir / "BINARY.md").write_bytes(b"\x00\x01\x02binary")
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err and err.strip().count("\n") == 0
    assert not (workdir / "layers").exists()


def test_wrong_base_and_existing_folder(workdir, monkeypatch, capsys):
    run(monkeypatch, capsys, "compile", str(EXAMPLES / "pirate.md"), "--base", "tiny:0")
    code, _, err = run(monkeypatch, capsys, "generate", "--layer", "layers/pirate-prompt", "--base", "tiny:1", "hi")
    assert code == 2 and "compiled for base tiny-0" in err and "tiny-1" in err
    code, _, err = run(monkeypatch, capsys, "compile", str(EXAMPLES / "pirate.md"), "--base", "tiny:0")
    assert code == 2 and "already exists" in err
    code, _, _ = run(monkeypatch, capsys, "compile", str(EXAMPLES / "pirate.md"), "--base", "tiny:0", "--force")
    assert code == 0


def test_compile_all_recompiles_layers_for_a_new_base(workdir, monkeypatch, capsys):
    run(monkeypatch, capsys, "compile", str(EXAMPLES / "pirate.md"), "--kind", "cache", "--base", "tiny:0")
    code, out, _ = run(monkeypatch, capsys, "compile", "--all", "--base", "tiny:1")
    assert code == 0 and "pirate-cache: recompiled" in out
    info = json.loads((workdir / "layers" / "pirate-cache" / "layer.json").read_text())
    assert info["base"]["spec"] == "tiny:1" and info["kind"] == "cache"
    code, out, _ = run(monkeypatch, capsys, "compile", "--all", "--base", "tiny:1")
    assert "pirate-cache: up to date" in out
    code, _, err = run(monkeypatch, capsys, "compile")
    assert code == 2 and "--all" in err


def test_demo_prints_every_row_side_by_side(workdir, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "demo", "--base", "tiny:0", "--kinds", "prompt,cache", "-n", "4", "-m", str(EXAMPLES / "pirate.md"), "-o", "demo")
    assert code == 0 and "identity layers side by side" in out
    for row in ("base", "prompt", "cache", "shuffled control", "greedy answers"):
        assert row in out
    assert (workdir / "demo" / "pirate-cache" / "layer.json").is_file()
    code, out, _ = run(monkeypatch, capsys, "demo", "--base", "tiny:0", "--kinds", "prompt,cache", "-n", "4", "-m", str(EXAMPLES / "pirate.md"), "-o", "demo")
    assert "(reused)" in out  # a second run reuses the layers it compiled for the same manifesto and base


def test_demo_recompiles_a_layer_whose_settings_changed(tiny, pirate, tmp_path, monkeypatch):
    """A demo folder compiled before a kind's defaults (or demo settings) changed must not be reused: its row would
    show the old layer's figures."""
    from rich.console import Console

    from credo.demo import _compile_or_reuse
    from credo.layers.kinds.hyper import HyperLayer

    monkeypatch.setenv("CREDO_CACHE", str(tmp_path / "cache"))
    folder, console = tmp_path / "pirate-hyper", Console(quiet=True)
    assert _compile_or_reuse(pirate, tiny, "hyper", folder, console)[1] is False
    assert _compile_or_reuse(pirate, tiny, "hyper", folder, console)[1] is True
    monkeypatch.setattr(HyperLayer, "demo_settings", {"rank": "3"})
    layer, reused = _compile_or_reuse(pirate, tiny, "hyper", folder, console)
    assert reused is False and layer.info.params["rank"] == 3
    assert _compile_or_reuse(pirate, tiny, "hyper", folder, console)[1] is True


@pytest.mark.parametrize(
    "args, message",
    [
        (["compile", "ok.md", "--bogus-flag"], "No such option: --bogus-flag (see 'credo compile --help')"),
        (["generate"], "Missing argument 'prompt'"),
        (["generate", "--max-tokens", "0", "hi"], "Invalid value for '--max-tokens'"),
        (["data", "clean", "in"], "Missing argument 'out'"),
        (["data", "tag", "--nope", "a", "b"], "No such option: --nope"),
        (["nope"], "No such command 'nope'"),
        (["compile", "--set"], "requires an argument"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(workdir, monkeypatch, capsys, args, message):
    """Issue #20.6: typer raised its own bundled click exceptions, which main() did not catch: 40-51 lines of traceback, exit 1."""
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.strip().count("\n") == 0


def test_help_and_no_arguments(workdir, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0 and "compile" in out
    code, out, err = run(monkeypatch, capsys, "data")
    assert code == 2 and "clean" in out + err and "Traceback" not in err  # the group's help, as click shows it


def test_ctrl_c_exits_130_with_how_to_resume(workdir, monkeypatch, capsys):
    import credo.data.executor as executor

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    (workdir / "in.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    monkeypatch.setattr(executor, "_executor", ctrl_c)
    code, _, err = run(monkeypatch, capsys, "data", "tag", "in.jsonl", "out")
    assert code == 130 and err.startswith("interrupted: run the same command again to resume") and err.count("\n") == 1
    monkeypatch.setattr(cli, "layers_ls", None)
    monkeypatch.setattr(cli, "list_layers", ctrl_c)
    code, _, err = run(monkeypatch, capsys, "layers", "ls")
    assert code == 130 and err == "interrupted\n"


def test_compile_force_replaces_only_a_layer_folder(workdir, monkeypatch, capsys):
    (workdir / "some" / "folder" / "sub").mkdir(parents=True)
    (workdir / "some" / "folder" / "notes.txt").write_text("mine")
    code, _, err = run(monkeypatch, capsys, "compile", str(EXAMPLES / "terse.md"), "-o", "some/folder", "--force", "--base", "tiny:0")
    assert code == 2 and "credo did not write it" in err and err.count("\n") == 1
    assert sorted(p.name for p in (workdir / "some" / "folder").iterdir()) == ["notes.txt", "sub"]


def test_layers_ls_writes_odd_names_out(workdir, monkeypatch, capsys):
    run(monkeypatch, capsys, "compile", str(EXAMPLES / "terse.md"), "-o", "layers/x\n", "--base", "tiny:0")
    (workdir / "layers" / "[red]odd").mkdir()
    code, out, _ = run(monkeypatch, capsys, "layers", "ls")
    assert code == 0 and "x\\n" in out and "[red]odd" in out
