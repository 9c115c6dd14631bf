"""The project's own exception types: a user mistake surfaces as one of these, in one line."""


class BioXLSTMError(Exception):
    """Base class of every error bioxlstm raises on purpose; its message is always one line.

    Reasons quoted from other libraries (parsers, YAML, pyfaidx) may span lines; they are joined so
    the CLI's `bioxlstm: error: ...` stays a single line.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(" ".join(str(message).split()), *args)


class ConfigError(BioXLSTMError, ValueError):
    """A configuration field is missing, misspelt or out of range."""


class CheckpointError(BioXLSTMError):
    """A checkpoint directory or file is missing, truncated or inconsistent."""


class ConversionError(CheckpointError):
    """An official Bio-xLSTM checkpoint cannot be converted: unreadable, unsafe or not understood."""
