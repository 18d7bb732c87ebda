"""Flat rows and their Arrow schema derived from one dataclass, so that a row's columns are written down once.

A dataclass whose fields are ``str``, ``int``, ``float`` or ``bool`` (each optionally ``| None``) is a row:
:func:`row_of` gives its dict (the fields, then the named read-only properties), :func:`row_schema` the Arrow
schema of that dict (``str`` -> ``string``, ``int`` -> ``int64``, ``float`` -> ``float64``, ``bool`` -> ``bool``;
every column nullable). Used by :class:`rgpt4d_core.eval.predict.Prediction` (one fixed schema for every Ray Data
block of the evaluation).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

_ARROW_TYPES: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def arrow_type(hint: Any) -> pa.DataType:
    """The Arrow type of a type hint: a scalar of :data:`_ARROW_TYPES`, or one of them ``| None``.

    Raises:
        TypeError: any other hint (a container, a union of two types, ...).
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return arrow_type(args[0])
    if hint in _ARROW_TYPES:
        return _ARROW_TYPES[hint]
    raise TypeError(f"no Arrow column type for {hint!r} (a row holds str, int, float or bool, each maybe None)")


def row_schema(cls: type, properties: Sequence[str] = ()) -> pa.Schema:
    """The Arrow schema of :func:`row_of` for dataclass ``cls``: its fields in order, then ``properties`` (typed by
    their return annotations)."""
    hints = typing.get_type_hints(cls)
    columns = [(f.name, arrow_type(hints[f.name])) for f in dataclasses.fields(cls)]
    for name in properties:
        prop = getattr(cls, name, None)
        if not isinstance(prop, property) or prop.fget is None:
            raise TypeError(f"{cls.__name__}.{name} is not a property")
        columns.append((name, arrow_type(typing.get_type_hints(prop.fget)["return"])))
    return pa.schema(columns)


def row_of(obj: Any, properties: Sequence[str] = ()) -> dict[str, Any]:
    """``obj``'s fields (``dataclasses.asdict``), then its ``properties``, as one flat dict."""
    row = dataclasses.asdict(obj)
    row.update({name: getattr(obj, name) for name in properties})
    return row
