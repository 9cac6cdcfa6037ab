"""The list filters of ``GET .../Calls.json`` (DIALECTS.md §2.4) as the store's neutral
:class:`~softswitch.store.Filter` conditions: ``To``, ``From``, ``Status``, ``ParentCallSid``
and ``StartTime`` (a day or a time; ``StartTime<`` / ``StartTime>`` for before / on-or-after,
as Twilio's ``StartTime<=`` / ``StartTime>=`` forms). Only calls this dialect placed are listed."""

from __future__ import annotations

from collections.abc import Mapping

from ...store import Filter, time_interval
from .codes import CallStatus, call_uuid_of
from .request import DIALECT_NAME

__all__ = ["PAGING", "list_filters"]

#: Query parameters that are paging, not filters.
PAGING = ("Page", "PageSize", "PageToken", "AfterSid")
_STATUSES = {s.value for s in CallStatus}


def _time(key: str, value: str) -> tuple[str, str]:
    try:
        return time_interval(value)
    except ValueError:
        raise ValueError(f"{key} must be a date (YYYY-MM-DD) or a time, got {value[:40]!r}") from None


def list_filters(query: Mapping[str, str]) -> list[Filter]:
    """The conditions of the filters in ``query``; an unknown filter or a bad value raises
    ValueError naming it (the route answers 400)."""
    out = [Filter("dialect", "=", DIALECT_NAME)]
    for key, value in query.items():
        if key in PAGING:
            continue
        if key == "To":
            out.append(Filter("to_number", "=", value))
        elif key == "From":
            out.append(Filter("from_number", "=", value))
        elif key == "Status":
            if value not in _STATUSES:
                raise ValueError(f"Status must be one of {', '.join(sorted(_STATUSES))}, got {value[:40]!r}")
            out.append(Filter("call_status", "=", value))
        elif key == "ParentCallSid":
            parent = call_uuid_of(value)
            if parent is None:
                raise ValueError(f"ParentCallSid is not a call sid: {value[:40]!r}")
            out.append(Filter("parent_call_uuid", "=", parent))
        elif key == "StartTime":
            start, end = _time(key, value)
            out.extend((Filter("initiation_time", ">=", start), Filter("initiation_time", "<", end)))
        elif key in ("StartTime<", "StartTime<="):
            start, end = _time(key, value)
            out.append(Filter("initiation_time", "<", end))
        elif key in ("StartTime>", "StartTime>="):
            start, end = _time(key, value)
            out.append(Filter("initiation_time", ">=", start))
        else:
            raise ValueError(f"unknown filter {key[:40]!r}")
    return out
