"""The operators' page and its JSON, dialect-neutral, under ``/ui/`` (same HTTP Basic
credentials as the APIs; each account sees its own calls)::

    GET  /ui/                              the page (softswitch/ui/static/index.html)
    GET  /ui/static/{name}                 its script and style sheet
    GET  /ui/api/live                      live and queued calls with media figures
    GET  /ui/api/events                    the same as server-sent events, on each change
                                           (``Accept: text/event-stream``; else one snapshot)
    GET  /ui/api/calls                     recent records (?status=, ?direction=, ?q=, ?limit=)
    GET  /ui/api/calls/{call_uuid}         one call: record, SIP messages, media series,
                                           callbacks and fetches with their attempts
    POST /ui/api/calls/{call_uuid}/hangup  hang a live call up

The page is plain HTML, CSS and JavaScript from the package (no build step, no CDN).
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any

from aiohttp import web

from ...model import EndReason, HangupSource
from ...store import Filter
from ..http import (
    MANAGER_KEY,
    OPS_KEY,
    STORE_KEY,
    HttpDialect,
    HttpError,
    authenticate_basic,
    json_response,
)

__all__ = ["http_dialect"]

#: The header the page's state-changing requests carry (cross-site request forgery guard).
UI_HEADER = "X-Softswitch-UI"
#: Live calls one table snapshot lists at most (the count says how many there are).
MAX_LIVE_ROWS = 500
#: How long one event stream lasts before the browser reconnects (EventSource does it itself).
STREAM_LIFETIME_S = 300.0
#: The longest wait between two events of a stream (durations move even when nothing else does).
STREAM_PERIOD_S = 1.0

_STATIC_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_STATIC_FILES = ("index.html", "app.js", "style.css")
_RECORD_FIELDS = (
    "call_uuid",
    "request_uuid",
    "parent_call_uuid",
    "direction",
    "from_number",
    "to_number",
    "caller_name",
    "call_status",
    "initiation_time",
    "ring_time",
    "answer_time",
    "end_time",
    "call_duration",
    "bill_duration",
    "hangup_cause_name",
    "hangup_cause_code",
    "hangup_source",
    "sip_status",
    "dialect",
    "error",
)


def _static(name: str) -> web.Response:
    if name not in _STATIC_FILES:
        raise HttpError(404, f"no file {name}")
    data = resources.files("softswitch.ui").joinpath("static", name).read_bytes()
    suffix = name[name.rfind(".") :]
    return web.Response(
        body=data,
        content_type=_STATIC_TYPES.get(suffix, "application/octet-stream"),
        headers={"Cache-Control": "no-cache"},
    )


def _ops(request: web.Request) -> Any:
    ops = request.app.get(OPS_KEY)
    if ops is None:
        raise HttpError(503, "the operators' view is not running")
    return ops


async def page(request: web.Request) -> web.Response:
    authenticate_basic(request)
    return _static("index.html")  # its <base href="/ui/"> serves /ui as well


async def static_file(request: web.Request) -> web.Response:
    authenticate_basic(request)
    return _static(request.match_info["name"])


def _live_snapshot(ops: Any, account_id: str) -> dict[str, Any]:
    calls = ops.live_calls(account_id)
    return {"time": time.time(), "total": len(calls), "calls": calls[:MAX_LIVE_ROWS]}


async def live(request: web.Request) -> web.Response:
    account = authenticate_basic(request)
    ops = _ops(request)
    return json_response(200, _live_snapshot(ops, account.auth_id))


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``live`` with the live calls at once, at each change and at least
    every :data:`STREAM_PERIOD_S`; the stream ends after :data:`STREAM_LIFETIME_S` or when
    the server stops taking calls (the browser reconnects)."""
    account = authenticate_basic(request)
    ops = _ops(request)
    manager = request.app[MANAGER_KEY]
    if "text/event-stream" not in request.headers.get("Accept", ""):
        # Not an EventSource (they always send this Accept): one snapshot, as /ui/api/live.
        return await live(request)
    if request.method == "HEAD":
        return web.Response(content_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_LIFETIME_S
    await resp.write(b"retry: 1000\n\n")
    while loop.time() < deadline and manager.accepting:
        body = json.dumps(_live_snapshot(ops, account.auth_id), separators=(",", ":"))
        try:
            await resp.write(f"event: live\ndata: {body}\n\n".encode())
        except (ConnectionError, RuntimeError):
            break
        await ops.wait_change(STREAM_PERIOD_S)
        await asyncio.sleep(0.05)  # coalesce a burst of changes into one event
    return resp


def _record(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: rec.get(k) for k in _RECORD_FIELDS}
    extra = rec.get("extra") or {}
    ua = extra.get("ua") or {}
    out["reason"] = rec.get("error") or (ua.get("reason") if isinstance(ua, dict) else None)
    out["hangup_cause"] = extra.get("hangup_cause")
    out["machine_detection"] = extra.get("machine_detection")
    out["sip_call_id"] = extra.get("sip_call_id")
    out["answer_fetch_url"] = extra.get("answer_fetch_url")
    return out


async def list_calls(request: web.Request) -> web.Response:
    account = authenticate_basic(request)
    store = request.app[STORE_KEY]
    query = request.query
    try:
        limit = max(1, min(500, int(query.get("limit", "100"))))
    except ValueError:
        raise HttpError(400, "limit must be an integer") from None
    filters = []
    if query.get("status"):
        filters.append(Filter("call_status", "=", query["status"]))
    if query.get("direction"):
        filters.append(Filter("direction", "=", query["direction"]))
    needle = query.get("q", "").strip().lower()
    # The store filters on equality; a search looks at the recent records' text here.
    rows, total = store.list_calls(account.auth_id, filters=filters, limit=500 if needle else limit)
    records = [_record(r) for r in rows]
    if needle:
        fields = (
            "call_uuid",
            "request_uuid",
            "from_number",
            "to_number",
            "hangup_cause_name",
            "hangup_cause",
            "reason",
            "sip_call_id",
            "call_status",
        )
        records = [
            r for r in records if any(needle in str(r.get(f) or "").lower() for f in fields)
        ][:limit]
        total = len(records)
    return json_response(200, {"total": total, "calls": records})


def _deliveries(store: Any, call_uuid: str) -> list[dict[str, Any]]:
    out = []
    for row in store.list_deliveries(call_uuid):
        attempts = store.list_attempts(row["id"])
        out.append(
            {
                "id": row["id"],
                "kind": row.get("kind"),
                "event": row.get("event"),
                "url": row.get("url"),
                "method": row.get("method"),
                "status": row.get("status"),
                "attempts": row.get("attempts"),
                "last_status": row.get("last_status"),
                "last_error": row.get("last_error"),
                "created_at": row.get("created_at"),
                "delivered_at": row.get("delivered_at"),
                "params": row.get("params"),
                "tries": [
                    {k: a.get(k) for k in ("attempt", "at", "status", "error", "duration_ms")}
                    for a in attempts
                ],
            }
        )
    return out


async def call_detail(request: web.Request) -> web.Response:
    account = authenticate_basic(request)
    store = request.app[STORE_KEY]
    ops = _ops(request)
    uid = request.match_info["call_uuid"]
    rec = store.get_call(account.auth_id, uid)
    trace = ops.trace(account.auth_id, uid)
    if rec is None or trace is None:
        raise HttpError(404, f"call {uid} not found")
    call = request.app[MANAGER_KEY].live_call(account.auth_id, uid)
    return json_response(
        200,
        {
            "record": _record(rec),
            "live": ops.live_view(call) if call is not None else None,
            "trace": trace,
            "deliveries": _deliveries(store, uid),
        },
    )


async def hangup(request: web.Request) -> web.Response:
    account = authenticate_basic(request)
    # A browser sends cached Basic credentials with a cross-site form post too; a custom
    # header needs a CORS preflight nobody answers, so only the page itself can send it.
    if request.headers.get(UI_HEADER) != "1":
        raise HttpError(403, f"the {UI_HEADER} header is required")
    manager = request.app[MANAGER_KEY]
    uid = request.match_info["call_uuid"]
    call = manager.live_call(account.auth_id, uid)
    if call is None:
        raise HttpError(404, f"no live call with uuid {uid}")
    await manager.hangup(call, source=HangupSource.API, reason=EndReason.API)
    return web.Response(status=204)


ROUTES = [
    ("/ui/", "GET", page),
    ("/ui/static/{name}", "GET", static_file),
    ("/ui/api/live", "GET", live),
    ("/ui/api/events", "GET", events),
    ("/ui/api/calls", "GET", list_calls),
    ("/ui/api/calls/{call_uuid}", "GET", call_detail),
    ("/ui/api/calls/{call_uuid}/hangup", "POST", hangup),
]


def http_dialect() -> HttpDialect:
    """The page's routes, mounted like a dialect (their errors: ``{api_id, error}``; a 401
    asks the browser for Basic credentials)."""
    return HttpDialect(name="ui", prefix="/ui", routes=ROUTES)
