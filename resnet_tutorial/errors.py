"""The base of every error a user can fix: its message says what to do.

The command line prints such an error as one line (no traceback) and exits with status 2.
"""


class ResnetTutorialError(Exception):
    """An error caused by input the user can correct (a name, a path, a file, a setting)."""
