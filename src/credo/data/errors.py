"""Errors of the data pipeline: things the user can fix, told in one line."""

from credo.errors import CredoError


class DataError(CredoError):
    """Input or output of a data stage cannot be used (missing, wrong format, already there)."""


class IngestError(CredoError):
    """Continued pre-training cannot start or resume (no documents, bad checkpoint, bad settings)."""
