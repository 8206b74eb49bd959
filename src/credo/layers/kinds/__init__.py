"""One module per layer kind; each registers its class with `credo.layers.registry.register`."""
