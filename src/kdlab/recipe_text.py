"""Recipe text as kdlab reads it: YAML files and ``key=value`` overrides turned into plain data, with every
failure (bad YAML, a recursive alias, a pydantic validation error) as one line that names the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kdlab.errors import KdlabError


def _format_error(where: str, error: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "recipe"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key '{loc}'"
    if error["type"] == "missing":
        return f"{where}: missing key '{loc}'"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    return f"{where}: {loc}: {message}{shown}"


def raise_validation(where: str, error: ValidationError, prefix: tuple = ()) -> None:
    """Turn a pydantic ValidationError into a one-line KdlabError naming the first bad key."""
    errors = error.errors()
    first = dict(errors[0], loc=prefix + tuple(errors[0]["loc"]))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise KdlabError(_format_error(where, first) + more) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], yaml value)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise KdlabError(f"override {text!r} is not of the form key=value (e.g. train.epochs=3)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    except Exception as error:  # noqa: BLE001 - PyYAML's constructors fail in other ways too (see _yaml_problem)
        raise KdlabError(f"override '{key.strip()}=...': cannot read the value ({_yaml_problem(error)})") from None
    return key.strip().split("."), parsed


def _yaml_problem(error: Exception) -> str:
    """Why PyYAML failed other than with a YAMLError: a number of over 4300 digits (ValueError), an explicit tag
    on a value it does not fit (``!!int ~``: ValueError, ``!!float`` alone: IndexError), nesting deeper than
    Python's stack (RecursionError)."""
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return f"{type(error).__name__}: {str(error).split(';')[0]}"


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise KdlabError(f"override {text!r}: '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise KdlabError(f"{path}: not valid YAML{at}") from None
    except OSError as error:
        raise KdlabError(f"{path}: cannot read recipe ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise KdlabError(f"{path}: cannot read recipe (not UTF-8 text: {error.reason} at byte {error.start})") from None
    except Exception as error:  # noqa: BLE001 - whatever PyYAML raises on this text is the file's fault
        raise KdlabError(f"{path}: cannot read recipe ({_yaml_problem(error)})") from None
    if not isinstance(raw, dict):
        raise KdlabError(f"{path}: a recipe must be a mapping of sections (data, model, method, train, ...)")
    return raw


def _cycle(node: Any, path: tuple = (), inside: frozenset = frozenset()) -> tuple | None:
    """The key path of the first mapping or list that contains itself (a YAML alias like ``&a [*a]``), or None."""
    if not isinstance(node, (dict, list)):
        return None
    if id(node) in inside:
        return path
    inside = inside | {id(node)}
    for key, child in node.items() if isinstance(node, dict) else enumerate(node):
        found = _cycle(child, (*path, key), inside)
        if found is not None:
            return found
    return None


def check_plain(where: str, raw: dict) -> None:
    """Refuse documents no config can hold: values that contain themselves, nesting deeper than Python's stack."""
    try:
        cycle = _cycle(raw)
    except RecursionError:
        raise KdlabError(f"{where}: the recipe is nested too deeply") from None
    if cycle is not None:
        raise KdlabError(f"{where}: {'.'.join(map(str, cycle)) or 'recipe'}: a value contains itself (a recursive "
                         f"YAML alias)")
