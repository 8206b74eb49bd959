"""credo: align a language model by a written manifesto, without retraining the base."""

__version__ = "0.1.0"
