"""The exceptions the CLI reports as bad input (exit code 2)."""

from .._config._errors import ConfigError
from ._errors import BadInput


# ValueError/TypeError: the public API raises them at once for bad user input (a selection that
# matches nothing, a start outside its bounds, …) with a message that names the argument.
BAD_INPUT_ERRORS = (
    ConfigError,
    BadInput,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    TypeError,
)
