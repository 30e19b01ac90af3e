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
