"""Typed errors: the library raises these, and only the CLI and the server turn them into exit codes or HTTP statuses."""


class CredoError(Exception):
    """Something the user can fix; its message is one line that says what and, where possible, how."""


def one_line(error: BaseException) -> str:
    """A library's error message, first line only: what a user reads when a file it parsed is corrupt."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class ManifestoError(CredoError):
    """The manifesto cannot be used (empty, binary, not UTF-8, too large, malformed)."""


class BaseModelError(CredoError):
    """The base model cannot be loaded or identified."""


class LayerError(CredoError):
    """A layer folder is missing, corrupt, or of an unknown kind."""


class BaseMismatchError(LayerError):
    """A layer was compiled for another base model."""


class DataError(CredoError):
    """A data file a user gave (evaluation items, a corpus for the data pipeline, a stage's output) is missing, malformed
    or in the way; the message names the file and, where it can, the line."""


class UnknownKindError(CredoError):
    """No layer kind of that name is registered."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during work that can be resumed; the message says how. A KeyboardInterrupt, so nothing that
    catches Exception swallows it, and the CLI exits 130 with the message."""
