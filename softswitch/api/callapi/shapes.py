"""The Call resource JSON (DIALECTS.md §2.3) from a stored call record, and the list page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .codes import API_VERSION, call_sid, direction, rfc2822_stored

__all__ = ["call_json"]


def call_json(rec: Mapping[str, Any], *, account_sid: str, base: str) -> dict[str, Any]:
    """One call as the ``twilio`` SDK's ``CallInstance`` reads it. ``base``: the account's
    path prefix the request came in on (``/2010-04-01/Accounts/{sid}``)."""
    sid = call_sid(rec["call_uuid"])
    ended = bool(rec.get("end_time"))
    start = rec.get("answer_time") or (rec.get("initiation_time") if ended else None)
    duration = int(rec.get("call_duration") or 0) if ended else None
    uri = f"{base}/Calls/{sid}.json"
    machine = (rec.get("extra") or {}).get("machine_detection") or {}
    return {
        "sid": sid,
        "account_sid": account_sid,
        "parent_call_sid": call_sid(rec["parent_call_uuid"])
        if rec.get("parent_call_uuid")
        else None,
        "date_created": rfc2822_stored(rec.get("initiation_time")),
        "date_updated": rfc2822_stored(
            rec.get("end_time")
            or rec.get("answer_time")
            or rec.get("ring_time")
            or rec.get("initiation_time")
        ),
        "to": rec.get("to_number"),
        "to_formatted": rec.get("to_number"),
        "from": rec.get("from_number"),
        "from_formatted": rec.get("from_number"),
        "caller_name": rec.get("caller_name"),
        "forwarded_from": None,
        "phone_number_sid": None,
        "group_sid": None,
        "trunk_sid": None,
        "queue_time": "0",
        "status": rec.get("call_status"),
        "start_time": rfc2822_stored(start),
        "end_time": rfc2822_stored(rec.get("end_time")),
        "duration": duration,
        "price": None,
        "price_unit": "USD",
        "direction": direction(rec.get("direction")),
        "answered_by": machine.get("answered_by"),
        "annotation": None,
        "api_version": API_VERSION,
        "uri": uri,
        "subresource_uris": {
            "notifications": f"{base}/Calls/{sid}/Notifications.json",
            "recordings": f"{base}/Calls/{sid}/Recordings.json",
        },
    }
