"""Reading a YAML config: parsing, validation, and paths resolved against its folder."""

import os
from typing import Any

import pydantic
import yaml

from ._errors import ConfigError, format_validation_error
from ._schema import Config


def validate_config(
    raw: Any, *, base_dir: str | os.PathLike = ".", source: str = "config"
) -> Config:
    """A `Config` from a plain dict, with relative paths resolved against `base_dir`.

    **Arguments:**

    - `raw`: the parsed YAML (a mapping).
    - `base_dir`: the folder relative paths (`data.file`, `output.directory`) refer to.
    - `source`: how to name the config in error messages.

    **Returns:** a validated `Config` whose paths are absolute.

    **Raises:** `ConfigError` naming every offending key (with the nearest valid key for a
    misspelt one).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections; got {raw!r}.")
    try:
        config = Config.model_validate(raw)
    except pydantic.ValidationError as error:
        raise format_validation_error(error, Config, source) from None
    base = os.path.abspath(os.fspath(base_dir))

    def resolve(path: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(path)))

    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"file": resolve(config.data.file)}),
            "output": config.output.model_copy(
                update={"directory": resolve(config.output.directory)}
            ),
        }
    )


def read_yaml(path: str | os.PathLike) -> Any:
    """The parsed content of a YAML file; `FileNotFoundError` or `ConfigError` when unreadable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} not found.")
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def load_config(path: str | os.PathLike) -> Config:
    """Reads and validates a YAML config; relative paths resolve against the file's folder.

    **Arguments:**

    - `path`: the YAML file.

    **Returns:** a validated `Config` (paths absolute).

    **Raises:** `FileNotFoundError` for a missing file, `ConfigError` (a `ValueError`) for
    invalid YAML or content, naming each offending key.
    """
    path = os.fspath(path)
    raw = read_yaml(path)
    return validate_config(raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path)
