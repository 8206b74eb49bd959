"""A layer on disk: `layer.json`, the manifesto it came from, and its payload, written atomically and verified on load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from credo.errors import BaseMismatchError, CredoError, LayerError
from credo.fsutil import atomic_dir, sha256_file
from credo.layers.layer import Layer, LayerInfo
from credo.manifesto import Manifesto

if TYPE_CHECKING:
    from credo.base import Base

LAYER_JSON = "layer.json"
MANIFESTO_FILE = "manifesto.md"


def save_layer(layer: Layer, folder: str | Path, overwrite: bool = False) -> Path:
    folder = Path(folder)
    try:
        with atomic_dir(folder, overwrite=overwrite) as tmp:
            (tmp / MANIFESTO_FILE).write_text(layer.manifesto.text, encoding="utf-8")
            layer.save_payload(tmp)
            layer.info.files = {
                str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != LAYER_JSON
            }
            (tmp / LAYER_JSON).write_text(json.dumps(layer.info.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    except FileExistsError as e:
        raise CredoError(str(e)) from None
    return folder


def read_info(folder: str | Path) -> LayerInfo:
    """Read and check `layer.json` alone: cheap enough for listing many layers."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LayerError(f"layer folder {folder} does not exist")
    path = folder / LAYER_JSON
    if not path.is_file():
        raise LayerError(f"{folder} is not a layer folder (no {LAYER_JSON})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = LayerInfo.from_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise LayerError(f"{path} is corrupt ({type(e).__name__}); recompile the layer") from None
    if not isinstance(info.base, dict) or "sha256" not in info.base or not info.kind:
        raise LayerError(f"{path} is corrupt (no kind or base hash); recompile the layer")
    return info


def verify_files(folder: Path, info: LayerInfo) -> None:
    for rel, expected in info.files.items():
        path = folder / rel
        if not path.is_file():
            raise LayerError(f"layer {folder} is corrupt: {rel} is missing")
        if sha256_file(path) != expected:
            raise LayerError(f"layer {folder} is corrupt: {rel} does not match its hash in {LAYER_JSON}")


def check_base(info: LayerInfo, base: Base, folder: Path | str = "") -> None:
    if info.base["sha256"] != base.sha256:
        raise BaseMismatchError(
            f"layer {folder or info.name} was compiled for base {info.base.get('name', '?')} ({info.base['sha256'][:12]}) "
            f"but the loaded base is {base.name} ({base.sha256[:12]}); recompile it with `credo compile --all`"
        )


def load_layer(folder: str | Path, base: Base | None = None) -> Layer:
    """Load a layer, refusing a corrupt folder or (when `base` is given) a layer made for another base."""
    from credo.layers.registry import get_kind

    folder = Path(folder)
    info = read_info(folder)
    cls = get_kind(info.kind)
    if base is not None:
        check_base(info, base, folder)
    verify_files(folder, info)
    try:
        manifesto = Manifesto.from_file(folder / MANIFESTO_FILE)
        return cls.load_payload(folder, info, manifesto)
    except CredoError:
        raise
    except Exception as e:  # a payload that safetensors or json cannot read
        raise LayerError(f"layer {folder} is corrupt: {type(e).__name__}: {e}") from None


def list_layers(root: str | Path) -> list[tuple[Path, LayerInfo | None, str]]:
    """Every folder under `root` that looks like a layer, with its info or the reason it cannot be read."""
    root = Path(root)
    rows: list[tuple[Path, LayerInfo | None, str]] = []
    if not root.is_dir():
        return rows
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            rows.append((sub, read_info(sub), "ok"))
        except LayerError as e:
            rows.append((sub, None, str(e)))
    return rows
