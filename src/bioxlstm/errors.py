"""The project's own exception types: a user mistake surfaces as one of these, in one line."""


class BioXLSTMError(Exception):
    """Base class of every error bioxlstm raises on purpose."""


class ConfigError(BioXLSTMError, ValueError):
    """A configuration field is missing, misspelt or out of range."""


class CheckpointError(BioXLSTMError):
    """A checkpoint directory or file is missing, truncated or inconsistent."""
