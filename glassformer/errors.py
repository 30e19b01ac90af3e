"""Exceptions a user can act on.

The library raises these with a message that says what is wrong and what would
be right; the CLI turns any of them into one line on stderr and a non-zero exit.
"""


class GlassformerError(Exception):
    """Base class of every error the CLI reports as one line."""


class ConfigError(GlassformerError, ValueError):
    """A configuration value is invalid (names the field, the value and what is valid)."""


class InputError(GlassformerError, ValueError):
    """User data (text, files, prompts) cannot be used as given."""


class CheckpointError(GlassformerError):
    """A model directory is missing, incomplete or corrupt."""


class TrainingStopped(GlassformerError):
    """Training stopped on purpose (a non-finite loss with ``--on-nan stop``); says at which step."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM during training: a checkpoint was saved; the message says where
    and how to resume.  ``exit_code`` is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
