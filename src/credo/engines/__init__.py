"""Engines run a base with an identity layer: `torch` (compiles layers, reads activations) and `llamacpp` (fast CPU serving)."""
