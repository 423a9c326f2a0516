"""Readable config errors: the offending key, what was wrong, and the nearest valid key."""

import difflib
import types
import typing
from typing import Any

import pydantic
from pydantic import BaseModel


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending key."""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        found = []
        for argument in typing.get_args(annotation):
            found += _models_in(argument)
        return found
    return []


def _walk(root: type[BaseModel], loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """The prefix of `loc` made of field names, and the model holding the last of them."""
    path: list[str] = []
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            break
        path.append(part)
        models = _models_in(model.model_fields[part].annotation)
        model = models[0] if models else None
    return path, model


def suggestion(key: str, valid: list[str]) -> str:
    """' Did you mean 'x'?' for the nearest of `valid`, else the list of valid keys."""
    lowered = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6) or difflib.get_close_matches(
        key.lower(), list(lowered), n=1, cutoff=0.6
    )
    if close:
        match = lowered.get(close[0], close[0])
        return f" Did you mean '{match}'?"
    return f" Valid keys here: {', '.join(valid)}."


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(
    error: pydantic.ValidationError, root: type[BaseModel], source: str = "config"
) -> ConfigError:
    """One line per offending key: unknown keys with the nearest valid key, missing keys, and
    bad values with what was received."""
    lines: list[str] = []
    seen: set[str] = set()
    for item in error.errors():
        loc = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            path, _ = _walk(root, loc[:-1])
            _, parent = _walk(root, tuple(path))
            if len(path) != len(loc) - 1:
                parent = None
            key = str(loc[-1])
            dotted = ".".join([*path, key])
            valid = list(parent.model_fields) if parent is not None else []
            hint = suggestion(key, valid) if valid else ""
            line = f"unknown key '{dotted}'.{hint}"
        elif kind == "missing":
            path, _ = _walk(root, loc)
            line = f"missing required key '{'.'.join(path) or '.'.join(map(str, loc))}'."
        else:
            path, _ = _walk(root, loc)
            dotted = ".".join(path) or "(top level)"
            message = str(item["msg"]).removeprefix("Value error, ")
            received = item.get("input")
            got = "" if isinstance(received, dict) else f" (got {_short(received)})"
            line = f"'{dotted}': {message}{got}."
            if dotted in seen:  # a union reports each alternative; the first says enough
                continue
            seen.add(dotted)
        lines.append(line)
    count = len(lines)
    header = f"{source}: {count} problem{'s' if count > 1 else ''}"
    return ConfigError(
        header + ":\n  - " + "\n  - ".join(lines) if count > 1 else header + ": " + lines[0]
    )
