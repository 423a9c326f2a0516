"""Exit codes of the `heterojax` command and the error for bad command-line input."""

EXIT_OK = 0
EXIT_QUALITY = 1  # a fit ran but failed its quality gate
EXIT_BAD_INPUT = 2  # invalid config, missing file, refused overwrite, unloadable data
EXIT_INTERNAL = 3  # an unexpected error (a bug): reported with a traceback


class BadInput(ValueError):
    """Input the command cannot use; reported in one line with exit code 2."""
