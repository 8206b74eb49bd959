"""Identity layers: one module per kind in `kinds/`, each registering itself; `folder` reads and writes them on disk."""

from credo.layers.folder import load_layer, save_layer
from credo.layers.layer import Layer, LayerInfo
from credo.layers.registry import compile_layer, get_kind, kind_names

__all__ = ["Layer", "LayerInfo", "compile_layer", "get_kind", "kind_names", "load_layer", "save_layer"]
