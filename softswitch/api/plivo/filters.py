"""The ``calls.list`` filters (``GET /v1/Account/{auth_id}/Call/``): Plivo query parameters
→ the store's neutral :class:`~softswitch.store.Filter` conditions.

``call_direction``, ``from_number``, ``to_number``, ``parent_call_uuid``, ``hangup_source``,
``hangup_cause_code``, ``request_uuid``, ``call_status`` (``status`` in the API),
``bill_duration`` (and ``__gt/__gte/__lt/__lte``), ``end_time`` / ``initiation_time`` /
``answer_time`` (same suffixes; an equality filter matches the precision written, e.g. the
whole minute).  ``subaccount`` is accepted and ignored (no subaccounts here).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...store import Filter, time_interval
from ..values import int64

__all__ = ["EQ_FILTERS", "LIST_FILTERS", "RANGE_FILTERS", "list_filters"]

#: Equality filters: Plivo name → (record column, kind: ``str`` | ``int``).
EQ_FILTERS: dict[str, tuple[str, str]] = {
    "call_direction": ("direction", "str"),
    "from_number": ("from_number", "str"),
    "to_number": ("to_number", "str"),
    "parent_call_uuid": ("parent_call_uuid", "str"),
    "hangup_source": ("hangup_source", "str"),
    "hangup_cause_code": ("hangup_cause_code", "int"),
    "bill_duration": ("bill_duration", "int"),
    "call_status": ("call_status", "str"),
    "request_uuid": ("request_uuid", "str"),
}
#: Filters taking ``__gt/__gte/__lt/__lte`` (times also match by equality at their precision).
RANGE_FILTERS: dict[str, tuple[str, str]] = {
    "bill_duration": ("bill_duration", "int"),
    "end_time": ("end_time", "time"),
    "initiation_time": ("initiation_time", "time"),
    "answer_time": ("answer_time", "time"),
}
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IGNORED_FILTERS = ("subaccount",)

#: Every accepted filter name → (record column, operator).
LIST_FILTERS: dict[str, tuple[str, str]] = {
    **{name: (column, "=") for name, (column, _) in EQ_FILTERS.items()},
    **{name: (column, "=") for name, (column, kind) in RANGE_FILTERS.items() if kind == "time"},
    **{
        f"{name}__{op}": (column, sqlop)
        for name, (column, _) in RANGE_FILTERS.items()
        for op, sqlop in _RANGE_OPS.items()
    },
}


def list_filters(query: Mapping[str, str]) -> list[Filter]:
    """The store conditions of the filter parameters in ``query`` (paging removed).

    An unknown filter or a malformed value raises ValueError (the route answers 400).
    """
    out: list[Filter] = []
    for key, raw in query.items():
        if key in _IGNORED_FILTERS:
            continue
        value = str(raw)
        name, _, op = key.partition("__")
        if op:
            if name not in RANGE_FILTERS or op not in _RANGE_OPS:
                raise ValueError(f"unknown filter {key!r}")
            column, kind = RANGE_FILTERS[name]
            if kind == "time":
                start, end = time_interval(value)
                # gt/lte compare against the end of the written interval, gte/lt its start.
                bound = end if op in ("gt", "lte") else start
                sqlop = {"gt": ">=", "gte": ">=", "lt": "<", "lte": "<"}[op]
                out.append(Filter(column, sqlop, bound))
            else:
                out.append(Filter(column, _RANGE_OPS[op], _int_filter(key, value)))
            continue
        if key in EQ_FILTERS:
            column, kind = EQ_FILTERS[key]
            out.append(Filter(column, "=", _int_filter(key, value) if kind == "int" else value))
        elif key in RANGE_FILTERS and RANGE_FILTERS[key][1] == "time":
            column = RANGE_FILTERS[key][0]
            start, end = time_interval(value)
            out.extend((Filter(column, ">=", start), Filter(column, "<", end)))
        else:
            raise ValueError(f"unknown filter {key!r}")
    return out


def _int_filter(key: str, value: str) -> int:
    try:
        return int64(value)
    except ValueError as exc:
        raise ValueError(f"filter {key!r} needs an integer ({exc}), got {value[:40]!r}") from None
