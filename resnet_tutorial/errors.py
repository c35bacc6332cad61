"""The base of every error a user can fix: its message says what to do.

The command line prints such an error as one line (no traceback) and exits with status 2.
"""


class ResnetTutorialError(Exception):
    """An error caused by input the user can correct (a name, a path, a file, a setting)."""


class ConfigError(ResnetTutorialError, ValueError):
    """A setting with a value that is not allowed (an environment variable, an option); the message
    names the allowed values."""


class ModelConfigError(ConfigError):
    """Arguments that do not make a model (a stem, a shortcut option, a stage table); the message says
    which values work."""


class ModelArgumentError(ModelConfigError, TypeError):
    """A keyword argument that a model does not take; the message names the ones it does."""
