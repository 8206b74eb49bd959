"""After the base changes, the layers compiled for the old one are stale: find them, and recompile them all.

A layer keeps its manifesto (manifesto.md) and its settings (layer.json `params`), so recompiling needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from credo.errors import CredoError
from credo.layers import compile_layer, get_kind, save_layer
from credo.layers.folder import MANIFESTO_FILE, list_layers
from credo.manifesto import Manifesto

if TYPE_CHECKING:
    from credo.base import Base
    from credo.layers.layer import LayerInfo


@dataclass
class Recompiled:
    path: Path
    kind: str
    old_base: str
    status: str  # "recompiled", "up to date", or "failed: <reason>"


def stale_layers(layers_dir: str | Path, base_sha256: str) -> list[tuple[Path, LayerInfo]]:
    """Readable layers under `layers_dir` compiled for a base other than `base_sha256`."""
    return [(p, info) for p, info, _ in list_layers(layers_dir) if info is not None and info.base.get("sha256") != base_sha256]


def _settings(info: LayerInfo) -> dict:
    """The layer's own settings: the params that are fields of its kind's config (params may hold more)."""
    import dataclasses

    config = get_kind(info.kind).Config
    names = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    return {k: v for k, v in info.params.items() if k in names}


def recompile_all(layers_dir: str | Path, base: Base, only_stale: bool = True) -> list[Recompiled]:
    """Recompile every layer in `layers_dir` (or only those made for another base) for `base`, each with its own
    manifesto, kind and settings; one failure is reported and does not stop the rest."""
    results: list[Recompiled] = []
    for path, info, status in list_layers(layers_dir):
        if info is None:
            results.append(Recompiled(path, "", "", f"failed: {status}"))
            continue
        old = str(info.base.get("sha256", ""))
        if only_stale and old == base.sha256:
            results.append(Recompiled(path, info.kind, old, "up to date"))
            continue
        try:
            manifesto = Manifesto.from_file(path / MANIFESTO_FILE)
            layer = compile_layer(manifesto, base, info.kind, _settings(info), name=info.name)
            save_layer(layer, path, overwrite=True)
            results.append(Recompiled(path, info.kind, old, "recompiled"))
        except CredoError as e:
            results.append(Recompiled(path, info.kind, old, f"failed: {e}"))
    return results
