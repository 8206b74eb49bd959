"""A layer on disk: `layer.json`, the manifesto it came from, and its payload, written atomically and verified on load.

`layer.json` lists the SHA-256 of every other file in the folder and carries a checksum of its own content. A folder
with a file that is not listed (or listed and different, or missing), or a `layer.json` whose content does not match its
checksum or has a field of the wrong type, is corrupt: nothing a layer loads goes unverified. The model card, README.md
(`credo.layers.card`), is the exception: written with the folder, read by no loader, so neither listed nor checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from credo.errors import BaseMismatchError, CredoError, LayerError
from credo.fsutil import NotReplaceable, atomic_dir, check_replaceable, sha256_file, write_text_atomic
from credo.layers.card import CARD_FILE, model_card
from credo.layers.layer import Layer, LayerInfo
from credo.layers.registry import get_kind
from credo.manifesto import Manifesto

if TYPE_CHECKING:
    from credo.base import Base

LAYER_JSON = "layer.json"
MANIFESTO_FILE = "manifesto.md"
CHECKSUM = "checksum"  # key in layer.json: SHA-256 of the rest of its content (see `_checksum`)
# The JSON type each known field of layer.json must have; fields added later are checked by their readers.
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "kind": str, "name": str, "manifesto": dict, "base": dict, "params": dict, "compile_seconds": (int, float),
    "compile_cpu_seconds": (int, float),
    "created": str, "credo_version": str, "files": dict, "report": dict, "precision": str, "device": str,
}


def save_layer(layer: Layer, folder: str | Path, overwrite: bool = False) -> Path:
    """Write `layer` to `folder` atomically; with `overwrite`, replace only a layer folder (one holding layer.json)."""
    folder = Path(folder)
    try:
        with atomic_dir(folder, overwrite=overwrite, replaces=LAYER_JSON) as tmp:
            (tmp / MANIFESTO_FILE).write_text(layer.manifesto.text, encoding="utf-8")
            layer.save_payload(tmp)
            layer.info.files = _write_info(tmp, layer.info.to_json())["files"]
            write_text_atomic(tmp / CARD_FILE, model_card(layer, tmp, folder.name))
    except FileExistsError as e:
        raise CredoError(str(e)) from None
    return folder


def check_target(folder: str | Path, overwrite: bool) -> None:
    """Fail where `save_layer` would, before any work: a folder that exists (without `overwrite`) or that is no layer."""
    folder = Path(folder)
    if folder.exists() or folder.is_symlink():
        if not overwrite:
            raise CredoError(f"{folder} already exists (pass --force to replace it)")
        try:
            check_replaceable(folder, LAYER_JSON)
        except NotReplaceable as e:
            raise CredoError(str(e)) from None


def relist(folder: str | Path) -> None:
    """Record the folder's files as they are now in its layer.json: for a file added by hand (a control.gguf, say),
    which is otherwise refused as unlisted."""
    folder = Path(folder)
    read_info(folder)  # a corrupt layer.json stays refused
    _write_info(folder, json.loads((folder / LAYER_JSON).read_text(encoding="utf-8")))


def _write_info(folder: Path, data: dict[str, Any]) -> dict[str, Any]:
    """List the hash of every payload file in `data`, seal it with its checksum, and write it as the folder's layer.json."""
    data["files"] = {rel: sha256_file(folder / rel) for rel in _payload_files(folder)}
    data[CHECKSUM] = _checksum(data)
    (folder / LAYER_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def _payload_files(folder: Path) -> list[str]:
    """Every file in the folder that a layer.json lists: all but layer.json files (a stacked layer's parts have their own),
    model cards (README.md, which users edit and no loader reads) and hidden files (which no loader reads either)."""
    return [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (LAYER_JSON, CARD_FILE) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def _checksum(data: dict[str, Any]) -> str:
    """SHA-256 of layer.json's content without its checksum, in one canonical form (so indentation does not count)."""
    body = {k: v for k, v in data.items() if k != CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")).hexdigest()


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
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise LayerError(f"{path} is corrupt ({type(e).__name__}); recompile the layer") from None
    problem = _shape_problem(data)
    if problem is None:
        try:
            return LayerInfo.from_json(data)
        except TypeError:  # a required field is missing
            problem = "a required field is missing"
    raise LayerError(f"{path} is corrupt ({problem}); recompile the layer")


def _shape_problem(data: Any) -> str | None:
    """What is wrong with layer.json's parsed content, or None. A layer.json written before checksums has none."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if CHECKSUM in data and data[CHECKSUM] != _checksum(data):
        return "its content does not match its checksum"
    for key, typ in FIELD_TYPES.items():
        if key in data and not (isinstance(data[key], typ) and not isinstance(data[key], bool)):
            return f"{key!r} is not a {typ.__name__ if isinstance(typ, type) else 'number'}"
    if not data.get("kind") or not isinstance(data.get("base"), dict) or not isinstance(data["base"].get("sha256"), str):
        return "no kind or base hash"
    if not all(isinstance(v, str) for v in data.get("files", {}).values()):
        return "a file hash is not a string"
    for rel in data.get("files", {}):
        pure = PurePosixPath(rel)
        if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
            return f"file {rel!r} is not a path inside the folder"
    return None


def verify_files(folder: Path, info: LayerInfo) -> None:
    """Every file a loader may read is listed and matches its hash; the manifesto is always among them."""
    if MANIFESTO_FILE not in info.files:
        raise LayerError(f"layer {folder} is corrupt: {LAYER_JSON} does not list {MANIFESTO_FILE}")
    unlisted = sorted(set(_payload_files(folder)) - set(info.files))
    if unlisted:
        raise LayerError(f"layer {folder} is corrupt: {unlisted[0]} is not listed in {LAYER_JSON}")
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
