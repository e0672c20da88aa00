"""One base for every configuration dataclass: a JSON round-trip that nests and refuses unknown keys.

A config is a plain dataclass. `to_dict()` gives JSON-ready values (nested configs as dicts, tuples
as lists); `from_dict()` rebuilds it, turning nested dicts back into their config classes and lists
back into tuples where the field says tuple, and names the keys it does not know instead of
dropping them (a typo in a saved config is an error, not a silent default).

>>> from lifelong.run import RunConfig
>>> RunConfig.from_dict({"model": {"hidden": [2, 3]}}).model.hidden
(2, 3)
>>> RunConfig.from_dict({"model": {"hiden": [2, 3]}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: ModelConfig has no option(s) ['hiden']; it takes ['dropout', 'hidden', 'kind', ...]
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _options(hint: Any) -> list[Any]:
    """The alternatives of a union hint (`X | None`), else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(hint) if a is not type(None)]
    return [hint]


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    for option in _options(hint):
        if isinstance(option, type) and issubclass(option, Config) and isinstance(value, dict):
            return option.from_dict(value)
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
    return value


@dataclasses.dataclass
class Config:
    """Base of lifelong's configuration dataclasses (runs, streams, models, learners, strategies,
    agents, screens, the service)."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        if not isinstance(values, dict):
            raise ValueError(f"{cls.__name__} is read from a mapping, not {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"{cls.__name__} has no option(s) {sorted(unknown)}; it takes {sorted(fields)}")
        hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
        return cls(**{k: _convert(hints.get(k), v) for k, v in values.items()})

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    words = [names.get(o) or ("a list" if typing.get_origin(o) in (tuple, list) else "a table")
             for o in _options(hint)]
    if type(None) in typing.get_args(hint):
        words.append("left out")
    return " or ".join(words)


def _fits(option: Any, value: Any) -> bool | None:
    """Whether `value` fits one alternative of a hint; None when the hint is not one checked here."""
    if isinstance(option, type) and issubclass(option, Config):
        return isinstance(value, dict)
    if option is bool:
        return isinstance(value, bool)
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if option is str:
        return isinstance(value, str)
    origin = typing.get_origin(option)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(option) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(_fits(args[0], v) is not False for v in value) \
            if len(args) == 1 else isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return None


def check_options(cls: type[Config], values: Any, where: str = "") -> None:
    """Raise ValueError naming the first key of `values` that `cls` does not take, or whose value has
    the wrong type, by its path (`where`: the path so far, e.g. "model" for "model.hidden").

    >>> from lifelong.run import RunConfig
    >>> check_options(RunConfig, {"model": {"hidden": "400"}})
    Traceback (most recent call last):
    ...
    ValueError: 'model.hidden' should be a list, not '400'
    """
    if not isinstance(values, dict):
        raise ValueError(f"{repr(where) if where else cls.__name__} should be a table of options, "
                         f"not {values!r}")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    for key, value in values.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ValueError(f"unknown option {path!r}; {where or cls.__name__} takes {', '.join(sorted(fields))}")
        hint = hints.get(key, Any)
        nested = [o for o in _options(hint) if isinstance(o, type) and issubclass(o, Config)]
        if nested and isinstance(value, dict):
            check_options(nested[0], value, path)
            continue
        if value is None and (hint is Any or type(None) in typing.get_args(hint)):
            continue
        fits = [_fits(o, value) for o in _options(hint)] if hint is not Any else [None]
        if value is None or not any(f is not False for f in fits):
            raise ValueError(f"{path!r} should be {_describe(hint)}, not {value!r}")
