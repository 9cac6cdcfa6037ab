"""A :class:`~softswitch.model.CallSpec` as JSON and back, for what another process must run:
a call request on the workers' Redis queue (:class:`softswitch.cluster.RequestQueue`), or kept
with a record in a shared store.

Tagged, so every type comes back as it was: a dataclass is ``{"$dc": "module:Name", "f":
{...}}``, an enum ``{"$en": "module:Name", "v": value}``, a tuple ``{"$tu": [...]}``, a frozenset
``{"$fs": [...]}``, a read-only mapping ``{"$mp": [[key, value], ...]}`` (keys may be enums), a
dict ``{"$map": [...]}``. Decoding builds only the classes of :data:`ALLOWED` (the call model and
the media settings it holds), never a class a payload names otherwise.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .model import CallSpec

__all__ = ["ALLOWED", "SpecDecodeError", "spec_from_json", "spec_to_json"]

#: Modules whose dataclasses and enums a payload may name.
ALLOWED = ("softswitch.model", "media.amd", "media.amd.", "media.dtmf", "media.dtmf.")


class SpecDecodeError(ValueError):
    """The payload is not a call spec this module wrote."""


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return {"$en": _name(type(value)), "v": _encode(value.value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init
        }
        return {"$dc": _name(type(value)), "f": fields}
    if isinstance(value, tuple):
        return {"$tu": [_encode(v) for v in value]}
    if isinstance(value, frozenset):
        return {"$fs": [_encode(v) for v in sorted(value, key=repr)]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        tag = "$mp" if isinstance(value, MappingProxyType) else "$map"
        return {tag: [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"cannot encode {type(value).__name__} in a call spec")


def _class(name: str) -> Any:
    module, _, qualname = name.partition(":")
    if not (module in ALLOWED or module.startswith(tuple(p for p in ALLOWED if p.endswith(".")))):
        raise SpecDecodeError(f"{name}: not a call model type")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SpecDecodeError(f"{name}: {exc}") from None
    return obj


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$dc" in value:
        factory: Any = _class(value["$dc"])
        if not (isinstance(factory, type) and dataclasses.is_dataclass(factory)):
            raise SpecDecodeError(f"{value['$dc']}: not a dataclass")
        return factory(**{k: _decode(v) for k, v in value["f"].items()})
    if "$en" in value:
        cls = _class(value["$en"])
        if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
            raise SpecDecodeError(f"{value['$en']}: not an enum")
        return cls(_decode(value["v"]))
    if "$tu" in value:
        return tuple(_decode(v) for v in value["$tu"])
    if "$fs" in value:
        return frozenset(_decode(v) for v in value["$fs"])
    if "$mp" in value:
        return MappingProxyType({_decode(k): _decode(v) for k, v in value["$mp"]})
    if "$map" in value:
        return {_decode(k): _decode(v) for k, v in value["$map"]}
    raise SpecDecodeError(f"untagged object {sorted(value)[:5]}")


def spec_to_json(spec: CallSpec) -> str:
    """``spec`` as a JSON text (digest passwords of its attempts included: keep it where
    the configuration's secrets may be)."""
    return json.dumps(_encode(spec), separators=(",", ":"))


def spec_from_json(text: str) -> CallSpec:
    """The :class:`CallSpec` :func:`spec_to_json` wrote; :class:`SpecDecodeError` otherwise."""
    try:
        spec = _decode(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, SpecDecodeError):
            raise
        raise SpecDecodeError(str(exc)) from None
    if not isinstance(spec, CallSpec):
        raise SpecDecodeError(f"a {type(spec).__name__}, not a CallSpec")
    return spec
