"""CallAPI routes, served under both the seed's prefix and Twilio's (so the official
``twilio`` SDK works by pointing its base URL at the server)::

    POST {base}/Calls.json              create a call (201 with the call resource)
    GET  {base}/Calls.json              list calls: To, From, Status, StartTime[<>], ParentCallSid;
                                        SortBy=<field>[:asc|desc]; Page (0-based) and
                                        PageSize (default 50, at most 1000)
    GET  {base}/Calls/{CallSid}.json    one call, live or ended (also at Calls/{CallSid} and
                                        Calls.json/{CallSid}, RestComm's spellings)
    POST {base}/Calls/{CallSid}.json    Url (+Method) or Twiml: redirect the running document;
                                        Status=completed: hang up (CANCEL while ringing);
                                        Status=canceled: end a queued or ringing call;
                                        FallbackUrl, StatusCallback (+Method): the call's
                                        webhooks from now on
    GET  {base}/Calls/{CallSid}/Trace.json  its SIP messages, sent and received (live or ended)

with ``{base}`` = ``/call/2012-04-24/Accounts/{AccountSid}`` or
``/2010-04-01/Accounts/{AccountSid}``. HTTP Basic with the account's id (its AccountSid) and
token; another account's SID in the path is a 404. Errors are Twilio's JSON
(``code``, ``message``, ``more_info``, ``status``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import uuid
from collections import OrderedDict
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ...app.document import XmlAppError
from ...call import AccountLimits, Call
from ...model import (
    CallError,
    CallNotAnswered,
    CallNotFound,
    InvalidSpec,
    MediaUnavailable,
    QueueFull,
    ShuttingDown,
)
from ..http import (
    MANAGER_KEY,
    OPS_KEY,
    STORE_KEY,
    Handler,
    HttpDialect,
    HttpError,
    authenticate_basic,
    json_response,
    read_body,
    recording_file,
    self_fetchable,
)
from ..values import INT64_MAX, int64
from .codes import call_uuid_of
from .conference import participant_routes
from .filters import list_filters, sort_order
from .openapi import openapi_document
from .request import DIALECT_NAME, STATUS_EVENTS, UpdateRequest, parse_create, parse_update
from .shapes import call_json
from .twiml import parse_document

__all__ = ["BASES", "DOMAIN_STATUS", "ROUTES", "error_response", "http_dialect"]

#: The account prefixes served: the seed's and Twilio's.
BASES = ("/call/2012-04-24/Accounts/{auth_id}", "/2010-04-01/Accounts/{auth_id}")
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1000

DOMAIN_STATUS: tuple[tuple[type[CallError], int], ...] = (
    (InvalidSpec, 400),
    (CallNotAnswered, 400),
    (MediaUnavailable, 400),
    (CallNotFound, 404),
    (QueueFull, 429),
    (ShuttingDown, 503),
)

#: Twilio error code of each HTTP status (the body's ``code``).
_CODES = {
    400: 21200,
    401: 20003,
    404: 20404,
    405: 20004,
    413: 20001,
    429: 20429,
    500: 20500,
    503: 20503,
}


def error_response(status: int, message: str, request_id: str) -> web.Response:
    """Twilio's error body; the HTTP status is repeated in ``status``."""
    code = _CODES.get(status, 20001 if 400 <= status < 500 else 20500)
    resp = json_response(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="softswitch"'
    return resp


def _authenticate(request: web.Request) -> AccountLimits:
    account = authenticate_basic(request)
    if request.match_info.get("auth_id") != account.auth_id:
        raise HttpError(404, f"The requested resource {request.path} was not found")
    return account


def _base(request: web.Request, account: AccountLimits) -> str:
    prefix = BASES[0] if request.path.startswith("/call/") else BASES[1]
    return prefix.replace("{auth_id}", account.auth_id)


def _record(request: web.Request, account: AccountLimits) -> dict[str, Any]:
    sid = request.match_info["call_sid"]
    uid = call_uuid_of(sid)
    rec = request.app[STORE_KEY].get_call(account.auth_id, uid) if uid else None
    if rec is None or rec.get("dialect") != DIALECT_NAME:
        raise HttpError(
            404, f"The requested resource {request.path} was not found: no call {sid[:40]}"
        )
    return rec


async def create_call(request: web.Request) -> web.Response:
    account = _authenticate(request)
    manager = request.app[MANAGER_KEY]
    if not manager.accepting:
        raise HttpError(503, "server is shutting down; not accepting calls")
    data = await read_body(request, repeated=True)
    spec = parse_create(data, twiml_url=_inline_twiml(request, account, data))
    result = await manager.admit(account, spec)
    rec = request.app[STORE_KEY].get_call(account.auth_id, result.call_uuids[0])
    body = call_json(rec, account_sid=account.auth_id, base=_base(request, account))
    body["status"] = "queued"
    return json_response(201, body)


#: Inline ``Twiml`` documents by their random token (the URL is the capability), newest last;
#: bounded: a document is fetched once, when its call is answered.
_INLINE: OrderedDict[str, str] = OrderedDict()
INLINE_MAX = 10_000


def _inline_twiml(request: web.Request, account: AccountLimits, data: dict[str, Any]) -> str | None:
    """The URL under which this server serves the request's ``Twiml`` (checked first)."""
    doc = data.get("Twiml")
    if doc is None or doc == "":
        return None
    if not isinstance(doc, str):
        raise HttpError(400, "Twiml must be a string")
    try:
        parse_document(doc)
    except XmlAppError as exc:
        raise HttpError(400, f"Twiml is not a document this server can run: {exc}") from None
    token = uuid.uuid4().hex
    _INLINE[token] = doc
    while len(_INLINE) > INLINE_MAX:
        _INLINE.popitem(last=False)
    public = request.app[MANAGER_KEY].public_url
    return f"{public}/2010-04-01/Accounts/{account.auth_id}/Twiml/{token}.xml"


@self_fetchable  # the call's own answer URL
async def inline_twiml(request: web.Request) -> web.Response:
    """An inline ``Twiml`` document (no auth: the random token is the key)."""
    doc = _INLINE.get(request.match_info["token"])
    if doc is None or request.app[MANAGER_KEY].account(request.match_info["auth_id"]) is None:
        raise HttpError(404, "no such document")
    return web.Response(text=doc, content_type="application/xml")


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int64(raw, lo=lo, hi=INT64_MAX if hi is None else hi)
    except ValueError as exc:
        raise HttpError(400, f"{name} {exc}") from None


async def list_calls(request: web.Request) -> web.Response:
    account = _authenticate(request)
    page = _int_query(request, "Page", 0, 0, None)
    size = _int_query(request, "PageSize", PAGE_SIZE_DEFAULT, 1, PAGE_SIZE_MAX)
    if page * size > INT64_MAX:
        raise HttpError(400, f"Page must be at most {INT64_MAX // size} with PageSize {size}")
    try:
        filters = list_filters(request.query)
        order = sort_order(request.query.get("SortBy"))
        rows, total = request.app[STORE_KEY].list_calls(
            account.auth_id, filters=filters, limit=size, offset=page * size, order=order
        )
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    base = _base(request, account)
    kept = [(k, v) for k, v in request.query.items() if k not in ("Page", "PageSize", "PageToken")]
    num_pages = max(1, math.ceil(total / size))

    def page_uri(n: int) -> str:
        return f"{base}/Calls.json?" + urlencode([*kept, ("PageSize", str(size)), ("Page", str(n))])

    start = page * size
    return json_response(
        200,
        {
            "calls": [call_json(r, account_sid=account.auth_id, base=base) for r in rows],
            "page": page,
            "page_size": size,
            "num_pages": num_pages,
            "total": total,
            "start": start,
            "end": start + max(len(rows) - 1, 0),
            "uri": page_uri(page),
            "first_page_uri": page_uri(0),
            "last_page_uri": page_uri(num_pages - 1),
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "next_page_uri": page_uri(page + 1) if start + size < total else None,
        },
    )


async def get_call(request: web.Request) -> web.Response:
    account = _authenticate(request)
    rec = _record(request, account)
    return json_response(
        200, call_json(rec, account_sid=account.auth_id, base=_base(request, account))
    )


async def get_trace(request: web.Request) -> web.Response:
    """``GET .../Calls/{CallSid}/Trace.json``: the call's SIP messages (``softswitch.ops``)."""
    account = _authenticate(request)
    rec = _record(request, account)
    ops = request.app.get(OPS_KEY)
    trace = ops.trace(account.auth_id, rec["call_uuid"]) if ops is not None else None
    if trace is None:
        raise HttpError(404, f"The requested resource {request.path} was not found")
    return json_response(200, {"sid": request.match_info["call_sid"], **trace})


async def update_call(request: web.Request) -> web.Response:
    """Redirect (``Url`` or ``Twiml``) or end (``Status``) a call, and change the webhooks it
    uses from now on (``FallbackUrl``, ``StatusCallback``); an ended call answers its final
    resource for a Status change, 400 for a redirect (DIALECTS.md §2.5)."""
    account = _authenticate(request)
    rec = _record(request, account)
    data = await read_body(request)
    req = parse_update(data, twiml_url=_inline_twiml(request, account, data))
    manager = request.app[MANAGER_KEY]
    call = manager.calls.get(rec["call_uuid"])
    if call is not None and call.finished.is_set():
        call = None
    if req.url is not None and req.status is None:
        if call is None or call.answered_at is None:
            raise HttpError(400, "Call is not in-progress. Cannot redirect (Url).")
    if call is not None and (req.fallback is not None or req.status_callback is not None):
        await _retarget(request, call, rec, req)
    if req.status is not None and call is not None:
        if req.status == "completed" or call.answered_at is None:
            await manager.hangup(call)
            await manager.wait_finished(call, timeout=5.0)
    elif req.url is not None and call is not None:
        await manager.runner.transfer(
            call, req.url, req.method.value, with_fallback=call.spec.fallback is not None
        )
    rec = request.app[STORE_KEY].get_call(account.auth_id, rec["call_uuid"]) or rec
    return json_response(
        200, call_json(rec, account_sid=account.auth_id, base=_base(request, account))
    )


async def _retarget(
    request: web.Request, call: Call, rec: dict[str, Any], req: UpdateRequest
) -> None:
    """Twilio's update applies ``FallbackUrl`` and ``StatusCallback`` to the call from now
    on: the spec's webhooks (the events subscribed stay; none yet: ``completed``) and the
    record's request parameters (the crash-time ``completed`` event reads them)."""
    spec = call.spec
    params = dict(spec.record_params)
    notify = dict(spec.notify)
    if req.status_callback is not None:
        hook = req.status_callback
        events = list(params.get("StatusCallbackEvent") or []) or ["completed"]
        notify = {STATUS_EVENTS[e]: hook for e in events}
        params.update(
            StatusCallback=hook.url,
            StatusCallbackMethod=hook.method.value,
            StatusCallbackEvent=events,
        )
    if req.fallback is not None:
        params.update(FallbackUrl=req.fallback.url, FallbackMethod=req.fallback.method.value)
    call.spec = dataclasses.replace(
        spec,
        notify=notify,
        fallback=req.fallback or spec.fallback,
        record_params=params,
    )
    stored = {**(rec.get("params") or {}), **params}
    await _maybe_await(request.app[STORE_KEY].update_call(call.call_uuid, params=stored))


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


def _routes() -> tuple[tuple[str, str, Handler], ...]:
    out: list[tuple[str, str, Handler]] = []
    for base in BASES:
        out += [
            (f"{base}/Calls.json", "POST", create_call),
            (f"{base}/Calls.json", "GET", list_calls),
            (f"{base}/Calls/{{call_sid}}.json", "GET", get_call),
            (f"{base}/Calls/{{call_sid}}.json", "POST", update_call),
            (f"{base}/Calls/{{call_sid}}/Trace.json", "GET", get_trace),
            *participant_routes(base),
        ]
        # RestComm's other spellings of one call (DIALECTS.md §2.1), after the .json form.
        for alias in (f"{base}/Calls/{{call_sid}}", f"{base}/Calls.json/{{call_sid}}"):
            out += [(alias, "GET", get_call), (alias, "POST", update_call)]
    out.append(("/2010-04-01/Accounts/{auth_id}/Recordings/files/{name}", "GET", recording_file))
    for method in ("GET", "POST"):
        out.append(("/2010-04-01/Accounts/{auth_id}/Twiml/{token}.xml", method, inline_twiml))
    return tuple(out)


ROUTES = _routes()


def http_dialect() -> HttpDialect:
    return HttpDialect(
        name=DIALECT_NAME,
        prefix=("/call/2012-04-24/", "/2010-04-01/"),
        routes=ROUTES,
        error_response=error_response,
        domain_status=DOMAIN_STATUS,
        openapi=openapi_document,
    )
