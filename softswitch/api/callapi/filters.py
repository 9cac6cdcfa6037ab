"""The list filters of ``GET .../Calls.json`` (DIALECTS.md §2.4) as the store's neutral
:class:`~softswitch.store.Filter` conditions: ``To``, ``From``, ``Status``, ``ParentCallSid``
and ``StartTime`` (a day or a time; ``StartTime<`` / ``StartTime>`` for before / on-or-after,
as Twilio's ``StartTime<=`` / ``StartTime>=`` forms), and RestComm's ``SortBy``
(``<DateCreated|From|To|Direction|Status|Duration|Price>[:<asc|desc>]``, ascending when the
direction is left out). Only calls this dialect placed are listed."""

from __future__ import annotations

from collections.abc import Mapping

from ...store import Filter, time_interval
from .codes import CallStatus, call_uuid_of
from .request import DIALECT_NAME

__all__ = ["PAGING", "SORT_KEYS", "list_filters", "sort_order"]

#: Query parameters that are paging or ordering, not filters.
PAGING = ("Page", "PageSize", "PageToken", "AfterSid", "SortBy")
#: ``SortBy`` fields and the record column each sorts on (``None``: the same value for every
#: call of this dialect, e.g. ``Price``, never set: accepted, the default order stays).
SORT_KEYS: dict[str, str | None] = {
    "DateCreated": "initiation_time",
    "From": "from_number",
    "To": "to_number",
    "Direction": None,
    "Status": "call_status",
    "Duration": "call_duration",
    "Price": None,
}
_STATUSES = {s.value for s in CallStatus}


def _time(key: str, value: str) -> tuple[str, str]:
    try:
        return time_interval(value)
    except ValueError:
        raise ValueError(
            f"{key} must be a date (YYYY-MM-DD) or a time, got {value[:40]!r}"
        ) from None


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
                raise ValueError(
                    f"Status must be one of {', '.join(sorted(_STATUSES))}, got {value[:40]!r}"
                )
            out.append(Filter("call_status", "=", value))
        elif key == "ParentCallSid":
            parent = call_uuid_of(value)
            if parent is None:
                raise ValueError(f"ParentCallSid is not a call sid: {value[:40]!r}")
            out.append(Filter("parent_call_uuid", "=", parent))
        elif key == "StartTime":
            start, end = _time(key, value)
            out.extend(
                (Filter("initiation_time", ">=", start), Filter("initiation_time", "<", end))
            )
        elif key in ("StartTime<", "StartTime<="):
            start, end = _time(key, value)
            out.append(Filter("initiation_time", "<", end))
        elif key in ("StartTime>", "StartTime>="):
            start, end = _time(key, value)
            out.append(Filter("initiation_time", ">=", start))
        else:
            raise ValueError(f"unknown filter {key[:40]!r}")
    return out


def sort_order(value: str | None) -> list[tuple[str, bool]]:
    """``SortBy`` as the store's ``(column, descending)`` keys; a bad value raises ValueError."""
    if value is None or not value.strip():
        return []
    field, _, direction = value.strip().partition(":")
    if field not in SORT_KEYS:
        raise ValueError(f"SortBy must be one of {', '.join(SORT_KEYS)} (got {field[:40]!r})")
    if direction.lower() not in ("", "asc", "desc"):
        raise ValueError(f"SortBy direction must be asc or desc (got {direction[:40]!r})")
    column = SORT_KEYS[field]
    return [] if column is None else [(column, direction.lower() == "desc")]
