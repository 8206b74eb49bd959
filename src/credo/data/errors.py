"""Errors of the data pipeline: things the user can fix, told in one line."""

from credo.errors import CredoError, DataError

__all__ = ["DataError", "IngestError"]  # DataError is credo's one; the stages raise it for input or output they cannot use


class IngestError(CredoError):
    """Continued pre-training cannot start or resume (no documents, bad checkpoint, bad settings)."""
