"""The JSON shapes the ``plivo`` SDK reads: call detail records (CDR), live and queued calls.

(The ``calls.list`` filters are in :mod:`.filters`.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# --- JSON shapes the SDK reads -------------------------------------------------------------


def plivo_time(value: str | None) -> str:
    """Record time 'YYYY-MM-DD HH:MM:SS+00:00' → callback time 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    if not value:
        return ""
    return value[:19]


def failure_reason(rec: Mapping[str, Any]) -> str | None:
    """Why a call failed, in words (an extra CDR field: the SDK keeps unknown keys as
    attributes): what went wrong on this side (the record's ``error``), else the callee's
    final SIP answer when it refused the call; None for a call that did not fail."""
    if rec.get("error"):
        return str(rec["error"])
    status = rec.get("sip_status")
    ua = (rec.get("extra") or {}).get("ua") or {}
    if isinstance(status, int) and status >= 300:
        reason = ua.get("reason") if isinstance(ua, Mapping) else None
        return f"SIP {status} {reason}".strip() if reason else f"SIP {status}"
    return None


def cdr_json(rec: Mapping[str, Any], *, auth_id: str, api_id: str | None = None) -> dict[str, Any]:
    """A call record in the shape of Plivo's "Retrieve a call" (``calls.get``) response."""
    params = rec.get("params") or {}
    extra = rec.get("extra") or {}
    out: dict[str, Any] = {
        "answer_time": rec.get("answer_time"),
        "bill_duration": int(rec.get("bill_duration") or 0),
        "billed_duration": int(rec.get("bill_duration") or 0),
        "call_direction": rec.get("direction") or "outbound",
        "call_duration": int(rec.get("call_duration") or 0),
        "call_status": rec.get("call_status"),
        "call_uuid": rec.get("call_uuid"),
        "caller_name": rec.get("caller_name"),
        "end_time": rec.get("end_time"),
        "from_number": rec.get("from_number"),
        "hangup_cause_code": rec.get("hangup_cause_code"),
        "hangup_cause_name": rec.get("hangup_cause_name"),
        "hangup_source": rec.get("hangup_source"),
        "initiation_time": rec.get("initiation_time"),
        "parent_call_uuid": rec.get("parent_call_uuid"),
        "request_uuid": rec.get("request_uuid"),
        "resource_uri": f"/v1/Account/{auth_id}/Call/{rec.get('call_uuid')}/",
        "ring_time": rec.get("ring_time"),
        "to_number": rec.get("to_number"),
        "answer_url": rec.get("answer_url") or params.get("answer_url"),
        "hangup_cause": extra.get("hangup_cause"),
        "sip_status": rec.get("sip_status"),
        "failure_reason": failure_reason(rec),
        "stir_attestation": "",
        "stir_verification": "Not Applicable",
        "total_amount": "0.00000",
        "total_rate": "0.00000",
        "voice_network_group": None,
        "conference_uuid": None,
    }
    if api_id is not None:
        out = {"api_id": api_id, **out}
    return out


def live_call_json(snapshot: Mapping[str, Any], *, api_id: str) -> dict[str, Any]:
    """A live call in the shape of Plivo's "Retrieve a live call" (``live_calls.get``) response."""
    return {
        "api_id": api_id,
        "direction": snapshot.get("direction", "outbound"),
        "from": snapshot.get("from"),
        "to": snapshot.get("to"),
        "caller_name": snapshot.get("caller_name") or snapshot.get("from"),
        "call_uuid": snapshot.get("call_uuid"),
        "request_uuid": snapshot.get("request_uuid"),
        "parent_call_uuid": snapshot.get("parent_call_uuid"),
        "call_status": snapshot.get("call_status"),
        "session_start": snapshot.get("session_start") or "",
        "stir_verification": "Not Applicable",
        "stir_attestation": "",
    }


def queued_call_json(snapshot: Mapping[str, Any], *, api_id: str) -> dict[str, Any]:
    """A queued call in the shape of Plivo's "Retrieve a queued call" response."""
    return {
        "api_id": api_id,
        "direction": snapshot.get("direction", "outbound"),
        "from": snapshot.get("from"),
        "to": snapshot.get("to"),
        "caller_name": snapshot.get("caller_name") or snapshot.get("from"),
        "call_uuid": snapshot.get("call_uuid"),
        "request_uuid": snapshot.get("request_uuid"),
        "call_status": "queued",
    }
