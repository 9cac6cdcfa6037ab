"""The ``/v0.1/`` routes: every endpoint is a form ``POST``; every answer that got past
routing and HTTP Basic authentication is HTTP 200 ``{"Success", "Message", ...}``
(DIALECTS.md §1.1, §1.4, §3 A1). Only auth (401), unknown paths (404) and wrong methods
(405) are HTTP errors.

v0.1 has no account in its paths: any configured account's auth id and token are accepted,
and the call belongs to (and is only visible to) that account.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ...call import AccountLimits, CallManager
from ...model import CallError
from ..http import (
    DIGITS_TONE_MS_KEY,
    MANAGER_KEY,
    Handler,
    HttpDialect,
    HttpError,
    authenticate_basic,
    json_response,
    read_form,
    recording_file,
)
from ..values import int64, is_http_url, recording_stem
from .conference import CONFERENCE_ENDPOINTS
from .dialect import CORE_UUID, NAME, REST_API_SERVER
from .openapi import openapi_document
from .request import (
    GROUP_CONFIRM_TIMEOUT_S,
    LegacyError,
    parse_bulk_call,
    parse_call,
    parse_group_call,
)

log = logging.getLogger("softswitch.api.legacy")

__all__ = ["PREFIX", "ROUTES", "UNSUPPORTED", "http_dialect"]

PREFIX = "/v0.1/"

#: Endpoints answered ``Success: false`` (no sound effects).
UNSUPPORTED: tuple[str, ...] = (
    "SoundTouch",
    "SoundTouchStop",
)


def error_response(status: int, message: str, request_id: str) -> web.Response:
    """Routing and authentication failures: the status is what matters (401/404/405)."""
    resp = json_response(status, {"Success": False, "Message": message})
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="softswitch"'
    return resp


def answer(success: bool, message: str, **extra: Any) -> web.Response:
    return json_response(200, {"Success": success, "Message": message, **extra})


def _time_seconds(raw: str, missing: str) -> int:
    """The ``Time`` parameter of ScheduleHangup/SchedulePlay: whole seconds > 0, with the
    framework's messages (``missing`` differs between the two endpoints)."""
    if not raw:
        raise LegacyError(missing)
    try:
        seconds = int64(raw)
    except ValueError:
        raise LegacyError("Invalid Time Parameter !") from None
    if seconds <= 0:
        raise LegacyError("Time Parameter must be > 0 !")
    return seconds


async def _form(request: web.Request) -> dict[str, str]:
    """The form fields (a JSON or other body has none: the framework reads the form only)."""
    try:
        form = await read_form(request)
    except HttpError as exc:  # past authentication, the framework answers 200 Success: false
        raise LegacyError(exc.error) from None
    if form is None:
        return {}
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


LegacyHandler = Callable[
    [web.Request, AccountLimits, CallManager, dict[str, str]], Awaitable[web.Response]
]


def endpoint(fn: LegacyHandler) -> Handler:
    """Authenticate, read the form, answer ``LegacyError`` as ``Success: false``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        account = authenticate_basic(request)
        manager = request.app[MANAGER_KEY]
        try:
            form = await _form(request)
            return await fn(request, account, manager, form)
        except LegacyError as exc:
            return answer(False, exc.message)

    handle.__name__ = fn.__name__
    handle.__doc__ = fn.__doc__
    return handle


def _has_gateway(manager: CallManager) -> Callable[[str], bool]:
    """Whether the user agent has a configured trunk called ``name``."""

    def check(name: str) -> bool:
        route = getattr(manager.dialer, "route", None)
        if route is None:
            return True  # a dialer without trunks (a test double) decides when dialing
        try:
            route("0000", gateway=name)
        except LookupError:
            return False
        except ValueError:
            return True
        return True

    return check


@endpoint
async def call(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``Call``: originate one call with gateway failover."""
    try:
        spec = parse_call(
            form,
            dialect=NAME,
            has_gateway=_has_gateway(manager),
            digits_tone_ms=request.app[DIGITS_TONE_MS_KEY],
            core_uuid=CORE_UUID,
        )
    except LegacyError as exc:
        return answer(False, exc.message, RequestUUID="", RestApiServer=REST_API_SERVER)
    try:
        result = await manager.admit(account, spec)
    except CallError as exc:
        log.info("Call refused: %s", exc.message)
        return answer(False, "Call Request Failed", RequestUUID="", RestApiServer=REST_API_SERVER)
    return answer(
        True,
        "Call Request Executed",
        RequestUUID=result.request_uuids[0],
        RestApiServer=REST_API_SERVER,
    )


@endpoint
async def bulk_call(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``BulkCall``: several ``Call``s at once, values split by ``Delimiter``."""
    try:
        specs = parse_bulk_call(
            form,
            dialect=NAME,
            has_gateway=_has_gateway(manager),
            digits_tone_ms=request.app[DIGITS_TONE_MS_KEY],
        )
    except LegacyError as exc:
        return answer(False, exc.message, RequestUUID=[])
    uuids: list[str] = []
    for spec in specs:
        try:
            result = await manager.admit(account, spec)
        except CallError as exc:
            log.info("BulkCall: one call refused: %s", exc.message)
            continue
        uuids.extend(result.request_uuids)
    if not uuids:
        return answer(False, "BulkCalls Requests Failed", RequestUUID=[])
    return answer(True, "BulkCalls Requests Executed", RequestUUID=uuids)


@endpoint
async def group_call(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``GroupCall``: ring every member at once (a parallel fork); the first to answer (and
    to press ``ConfirmKey``) wins, the others are cancelled. One ``RequestUUID``."""
    try:
        specs, group = parse_group_call(
            form,
            dialect=NAME,
            has_gateway=_has_gateway(manager),
            digits_tone_ms=request.app[DIGITS_TONE_MS_KEY],
            confirm_timeout=GROUP_CONFIRM_TIMEOUT_S,
        )
        result = await manager.admit_fork(account, specs, group)
    except CallError as exc:
        log.info("GroupCall refused: %s", exc.message)
        raise LegacyError("GroupCall Request Failed") from None
    return answer(True, "GroupCall Request Executed", RequestUUID=result.request_uuids[0])


def _fork_members(found: Any) -> list[Any]:
    """A call and, for a member of a parallel fork, every other member still up."""
    fork = getattr(found, "fork", None)
    if fork is None:
        return [found]
    return [c for c in fork.members if not c.finished.is_set()]


@endpoint
async def hangup_call(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``HangupCall``: by ``CallUUID``, or by ``RequestUUID`` (also ringing or queued)."""
    call_uuid, request_uuid = form.get("CallUUID", ""), form.get("RequestUUID", "")
    if not call_uuid and not request_uuid:
        raise LegacyError("CallUUID or RequestUUID Parameter must be present")
    if call_uuid and request_uuid:
        raise LegacyError("Both CallUUID and RequestUUID Parameters cannot be present")
    if call_uuid:
        found = manager.live_call(account.auth_id, call_uuid)
    else:
        found = manager.live_by_request(account.auth_id, request_uuid)
    if found is None:
        raise LegacyError("Hangup Call Failed")
    for target in (
        _fork_members(found) if request_uuid else [found]
    ):  # a group's RequestUUID: every member
        await manager.hangup(target)
    return answer(True, "Hangup Call Executed")


@endpoint
async def hangup_all_calls(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``HangupAllCalls``: every live or queued call of the account."""
    # every worker's (``cluster_live_calls``): another worker's calls are ended by it
    for found in await manager.cluster_live_calls(
        account.auth_id
    ) + await manager.cluster_live_calls(account.auth_id, status="queued"):
        await manager.hangup(found)
    return answer(True, "All Calls Hungup")


@endpoint
async def transfer_call(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``TransferCall``: the call stops its document and runs the one at ``Url``."""
    call_uuid, url = form.get("CallUUID", ""), form.get("Url", "")
    if not call_uuid:
        raise LegacyError("CallUUID Parameter must be present")
    if not url:
        raise LegacyError("Url Parameter must be present")
    if not is_http_url(url):
        raise LegacyError("Url is not Valid")
    found = manager.live_call(account.auth_id, call_uuid)
    if found is None:
        raise LegacyError("Transfer Call Failed -- Call not found")
    try:
        await manager.runner.transfer(found, url, "POST")
    except CallError as exc:
        raise LegacyError(f"Transfer Call Failed -- {exc.message}") from None
    return answer(True, "Transfer Call Executed")


@endpoint
async def schedule_hangup(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``ScheduleHangup``: end the call ``Time`` seconds from now (``ALLOTTED_TIMEOUT``)."""
    call_uuid, raw = form.get("CallUUID", ""), form.get("Time", "")
    try:
        if not call_uuid:
            raise LegacyError("CallUUID Parameter must be present")
        seconds = _time_seconds(raw, "Time Parameter must be present")
        found = manager.live_call(account.auth_id, call_uuid)
        if found is None:
            raise LegacyError(f"ScheduleHangup Failed: CallUUID {call_uuid} not found")
        try:
            sched_id = manager.schedule_hangup(found, float(seconds))
        except CallError as exc:
            raise LegacyError(f"ScheduleHangup Failed: {exc.message}") from None
    except LegacyError as exc:
        return answer(False, exc.message, SchedHangupId="")
    return answer(
        True, f"ScheduleHangup Done with SchedHangupId {sched_id}", SchedHangupId=sched_id
    )


@endpoint
async def cancel_scheduled_hangup(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``CancelScheduledHangup``: ``SchedHangupId`` from ``ScheduleHangup``."""
    sched_id = form.get("SchedHangupId", "")
    if not sched_id:
        raise LegacyError("SchedHangupId Parameter must be present")
    mine = [
        c
        for c in manager.live_calls(account.auth_id)
        if c.timers is not None and sched_id in c.timers.scheduled
    ]
    if not mine or not manager.cancel_scheduled_hangup(sched_id):
        raise LegacyError(
            f"Scheduled Hangup Cancelation Failed: SchedHangupId {sched_id} not found"
        )
    return answer(True, "Scheduled Hangup Canceled")


@endpoint
async def send_digits(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``SendDigits``: DTMF on the A leg (``Leg=aleg``, default) or the bridged B leg."""
    from media.dtmf import parse_send_digits

    call_uuid, digits, leg = (
        form.get("CallUUID", ""),
        form.get("Digits", ""),
        form.get("Leg", "") or "aleg",
    )
    if not call_uuid:
        raise LegacyError("CallUUID Parameter Missing")
    if not digits:
        raise LegacyError("Digits Parameter Missing")
    if leg not in ("aleg", "bleg"):
        raise LegacyError("Invalid Leg Parameter")
    found = manager.live_call(account.auth_id, call_uuid)
    if found is None:
        raise LegacyError("SendDigits Failed")
    tone_ms = request.app[DIGITS_TONE_MS_KEY]
    try:
        steps = parse_send_digits(digits, default_tone_ms=tone_ms)
        manager.live_ops.send_dtmf(found, steps, leg)
    except (ValueError, CallError):
        raise LegacyError("SendDigits Failed") from None
    return answer(True, "SendDigits executed")


@dataclass(frozen=True, slots=True)
class PlayOrder:
    """``Play`` as :class:`softswitch.liveops.PlayOrder`."""

    urls: tuple[str, ...]
    length: int | None
    legs: str
    loop: bool
    mix: bool


@dataclass(frozen=True, slots=True)
class RecordOrder:
    """``RecordStart`` as :class:`softswitch.liveops.RecordOrder`: the file is
    ``<data_dir>/recordings/<auth id>/<FileName or uuid>.<format>`` (``FilePath``, a
    directory on the framework's server, is not used)."""

    time_limit: int
    file_format: str
    file_name: str | None = None
    callback_url: str | None = None
    callback_method: str = "POST"
    transcription_requested: bool = False


#: ``Play``'s ``Legs``.
PLAY_LEGS = ("aleg", "bleg", "both")
PLAY_LENGTH_DEFAULT = 3600
RECORD_TIME_LIMIT_DEFAULT = 60


def _play_order(form: dict[str, str]) -> PlayOrder:
    """``Play``'s checks after ``CallUUID`` and ``Sounds`` are known to be present."""
    sounds = form["Sounds"]
    legs = form.get("Legs") or "aleg"
    if legs not in PLAY_LEGS:
        raise LegacyError("Legs Parameter is Invalid")
    try:
        length = int64(form.get("Length") or str(PLAY_LENGTH_DEFAULT))
    except ValueError:
        length = 0
    if length <= 0:
        raise LegacyError("Length Parameter must be a positive integer")
    urls = tuple(u.strip() for u in sounds.split(form.get("Delimiter") or ",") if u.strip())
    if not urls or not all(is_http_url(u) for u in urls):  # softswitch plays URLs, not server paths
        raise LegacyError("Sounds Parameter is Invalid")
    return PlayOrder(
        urls, length, legs, form.get("Loop") == "true", form.get("Mix", "true") != "false"
    )


def _play_checks(form: dict[str, str]) -> tuple[str, PlayOrder]:
    call_uuid, sounds = form.get("CallUUID", ""), form.get("Sounds", "")
    if not call_uuid:
        raise LegacyError("CallUUID Parameter Missing")
    if not sounds:
        raise LegacyError("Sounds Parameter Missing")
    return call_uuid, _play_order(form)


@endpoint
async def play(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``Play``: audio URLs (``Sounds``, split by ``Delimiter``) on the call's leg(s)."""
    call_uuid, order = _play_checks(form)
    found = manager.live_call(account.auth_id, call_uuid)
    if found is None:
        raise LegacyError("Play Request Failed")
    try:
        await manager.live_ops.play(found, order)
    except CallError:
        raise LegacyError("Play Request Failed") from None
    return answer(True, "Play Request Executed")


_SCHED_PLAYS = "scheduled_plays"


@endpoint
async def schedule_play(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``SchedulePlay``: ``Play`` in ``Time`` seconds; answers a ``SchedPlayId``."""
    try:
        call_uuid, order = _play_checks(form)
        raw = form.get("Time", "")
        seconds = _time_seconds(raw, "Time Parameter Missing")
        found = manager.live_call(account.auth_id, call_uuid)
        if found is None:
            raise LegacyError(f"SchedulePlay Failed: CallUUID {call_uuid} not found")
    except LegacyError as exc:
        return answer(False, exc.message, SchedPlayId="")
    sched_id = str(uuid.uuid4())
    plays = found.dialect_data.setdefault(_SCHED_PLAYS, {})

    async def start() -> None:
        try:
            await manager.live_ops.play(found, order)
        except CallError as exc:
            log.info(
                "call %s: scheduled play %s not started: %s", found.call_uuid, sched_id, exc.message
            )

    def fire() -> None:
        plays.pop(sched_id, None)
        if not found.finished.is_set():
            manager.spawn(start(), f"sched-play-{sched_id}")

    plays[sched_id] = manager.scheduler.call_later(float(seconds), fire)
    return answer(
        True, f"SchedulePlay Request Done with SchedPlayId {sched_id}", SchedPlayId=sched_id
    )


@endpoint
async def cancel_scheduled_play(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``CancelScheduledPlay``: ``SchedPlayId`` from ``SchedulePlay``."""
    sched_id = form.get("SchedPlayId", "")
    if not sched_id:
        raise LegacyError("SchedPlayId Parameter must be present")
    for found in manager.live_calls(account.auth_id):
        handle = found.dialect_data.get(_SCHED_PLAYS, {}).pop(sched_id, None)
        if handle is not None:
            handle.cancel()
            return answer(True, "Scheduled Play Canceled")
    raise LegacyError(f"Scheduled Play Cancelation Failed: SchedPlayId {sched_id} not found")


@endpoint
async def play_stop(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``PlayStop``: stop what ``Play`` started."""
    call_uuid = form.get("CallUUID", "")
    if not call_uuid:
        raise LegacyError("CallUUID Parameter Missing")
    found = manager.live_call(account.auth_id, call_uuid)
    if found is None:
        raise LegacyError("PlayStop Failed")
    manager.live_ops.stop_playback(found, "play")
    return answer(True, "PlayStop executed")


@endpoint
async def record_start(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``RecordStart``: record the call; ``RecordFile`` is the recording's URL."""
    call_uuid = form.get("CallUUID", "")
    if not call_uuid:
        raise LegacyError("CallUUID Parameter must be present")
    file_format = form.get("FileFormat") or "mp3"
    if file_format not in ("mp3", "wav"):
        raise LegacyError("FileFormat Parameter must be 'mp3' or 'wav'")
    raw = form.get("TimeLimit") or str(RECORD_TIME_LIMIT_DEFAULT)
    try:
        time_limit = int64(raw)
    except ValueError:
        time_limit = 0
    if time_limit <= 0:
        raise LegacyError(f"RecordStart Failed: invalid TimeLimit '{raw}'")
    try:
        file_name = recording_stem(form.get("FileName"))
    except ValueError:
        raise LegacyError("RecordStart Failed: invalid FileName") from None
    found = manager.live_call(account.auth_id, call_uuid)
    if found is None:
        raise LegacyError(f"RecordStart Failed: CallUUID {call_uuid} not found")
    try:
        order = RecordOrder(time_limit, file_format, file_name)
        _, url = manager.live_ops.start_recording(found, order, "")
    except CallError as exc:
        raise LegacyError(f"RecordStart Failed: {exc.message}") from None
    return answer(True, f"RecordStart Executed with RecordFile {url}", RecordFile=url)


@endpoint
async def record_stop(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``RecordStop``: the recording at ``RecordFile``, or ``all``."""
    call_uuid, record_file = form.get("CallUUID", ""), form.get("RecordFile", "")
    if not call_uuid:
        raise LegacyError("CallUUID Parameter must be present")
    if not record_file:
        raise LegacyError("RecordFile Parameter must be present")
    found = manager.live_call(account.auth_id, call_uuid)
    if found is None:
        raise LegacyError(f"RecordStop Failed: CallUUID {call_uuid} not found")
    if not manager.live_ops.stop_recording(found, None if record_file == "all" else record_file):
        raise LegacyError(f"RecordStop Failed: RecordFile {record_file} not found")
    return answer(True, "RecordStop Executed")


@endpoint
async def reload_config(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``ReloadConfig``: softswitch reads its configuration once, at start (restart it, or
    drain and restart, to change it); answered as the framework's failure."""
    return answer(
        False, "ReloadConfig Failed -- not supported: softswitch reads its configuration at start"
    )


@endpoint
async def reload_cache_config(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    """``ReloadCacheConfig``: there is no cache server to reconfigure."""
    return answer(
        False, "ReloadCacheConfig Failed -- not supported: softswitch has no cache server"
    )


INDEX_PAGE = (
    "<html><head><title>softswitch</title></head><body>"
    "<p>softswitch: the legacy Plivo framework REST API is served under /v0.1/ "
    "(its description: /openapi.json).</p></body></html>"
)


async def index(request: web.Request) -> web.Response:
    """``GET /``: the framework's welcome page (no authentication, no server details)."""
    return web.Response(text=INDEX_PAGE, content_type="text/html")


def _unsupported(name: str) -> Handler:
    async def handle(
        request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
    ) -> web.Response:
        return answer(False, f"{name} is not supported by this server")

    handle.__name__ = f"unsupported_{name}"
    return endpoint(handle)


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    (f"{PREFIX}Call/", "POST", call),
    (f"{PREFIX}BulkCall/", "POST", bulk_call),
    (f"{PREFIX}GroupCall/", "POST", group_call),
    (f"{PREFIX}HangupCall/", "POST", hangup_call),
    (f"{PREFIX}HangupAllCalls/", "POST", hangup_all_calls),
    (f"{PREFIX}TransferCall/", "POST", transfer_call),
    (f"{PREFIX}ScheduleHangup/", "POST", schedule_hangup),
    (f"{PREFIX}CancelScheduledHangup/", "POST", cancel_scheduled_hangup),
    (f"{PREFIX}SendDigits/", "POST", send_digits),
    (f"{PREFIX}Play/", "POST", play),
    (f"{PREFIX}PlayStop/", "POST", play_stop),
    (f"{PREFIX}SchedulePlay/", "POST", schedule_play),
    (f"{PREFIX}CancelScheduledPlay/", "POST", cancel_scheduled_play),
    (f"{PREFIX}RecordStart/", "POST", record_start),
    (f"{PREFIX}RecordStop/", "POST", record_stop),
    *((f"{PREFIX}{name}/", "POST", endpoint(fn)) for name, fn in CONFERENCE_ENDPOINTS.items()),
    *((f"{PREFIX}{name}/", "POST", _unsupported(name)) for name in UNSUPPORTED),
    *((f"{PREFIX}ReloadConfig/", m, reload_config) for m in ("POST", "GET")),
    *((f"{PREFIX}ReloadCacheConfig/", m, reload_cache_config) for m in ("POST", "GET")),
    ("/", "GET", index),
    (f"{PREFIX}Recording/{{auth_id}}/{{name}}", "GET", recording_file),
)


def http_dialect() -> HttpDialect:
    """``/v0.1/`` as the HTTP application mounts it."""
    return HttpDialect(
        name=NAME,
        prefix=PREFIX,
        routes=ROUTES,
        error_response=error_response,
        openapi=openapi_document,
    )
