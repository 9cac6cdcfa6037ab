"""The framework's ``/v0.1/Conference*/`` endpoints over the core's rooms
(:mod:`softswitch.conference`), with its parameters and messages (``api.py``
``conference_*``): ``ConferenceName``, ``MemberID`` (ids separated by commas, or ``all``),
``Success: true`` and "Conference Mute Executed" with the ``MemberID`` list of the members
it acted on; a missing parameter is ``Success: false`` with "<Name> Parameter must be
present"; an unknown room is "Conference <Action> Conference <name> not found" (Mute, Unmute,
Kick, Hangup, Deaf and Undeaf answer ``Success: true`` with no members, as the framework
does, since it only logs a failure per member).

``ConferenceRecordStart`` records the room's mix into the account's recordings (the
framework's ``FilePath`` is a path on its own server: here, as for ``RecordStart``, the file
is ``FileName`` (a plain name; else a uuid) in the account's recordings, and ``RecordFile``
is its URL);
``ConferencePlay``'s ``FilePath`` is an http(s) URL or a local file under the data
directory; ``ConferenceList``/``ConferenceListMembers`` answer ``List`` keyed by room name
with ``ConferenceUUID``, ``ConferenceRunTime``, ``ConferenceName``,
``ConferenceMemberCount`` and ``Members`` (``MemberID``, ``Deaf``, ``Muted``, ``CallUUID``,
``CallName``, ``CallNumber``, ``JoinTime``), filtered by ``MemberFilter``,
``CallUUIDFilter``, ``MutedFilter``, ``DeafFilter``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ...call import AccountLimits, CallManager
from ...conference import Member, Room
from ..values import is_http_url, recording_stem
from .request import LegacyError

__all__ = ["CONFERENCE_ENDPOINTS"]

_Handler = Callable[
    [web.Request, AccountLimits, CallManager, dict[str, str]], Awaitable[web.Response]
]


def _answer(success: bool, message: str, **extra: Any) -> web.Response:
    from .routes import answer  # noqa: PLC0415

    return answer(success, message, **extra)


def _need(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise LegacyError(f"{name} Parameter must be present")
    return value


def _room(manager: CallManager, account: AccountLimits, form: dict[str, str]) -> Room | None:
    return manager.conferences.get(account.auth_id, _need(form, "ConferenceName"))


def _targets(room: Room | None, raw: str) -> list[Member]:
    if room is None:
        return []
    return room.find("all" if raw == "all" else [i.strip() for i in raw.split(",") if i.strip()])


def _member_action(action: str, act: Callable[[CallManager, Room, list[Member]], Any]) -> _Handler:
    async def handle(
        request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
    ) -> web.Response:
        room = _room(manager, account, form)
        members = _targets(room, _need(form, "MemberID"))
        if room is not None and members:
            result = act(manager, room, members)
            if isinstance(result, Awaitable):
                await result
        return _answer(
            True, f"Conference {action} Executed", MemberID=[m.member_id for m in members]
        )

    handle.__name__ = f"conference_{action.lower()}"
    return handle


async def _hangup(manager: CallManager, room: Room, members: list[Member]) -> None:
    for m in members:
        call = manager.calls.get(m.call_uuid)
        if call is not None and not call.finished.is_set():
            await manager.hangup(call)


def _not_found(action: str, form: dict[str, str]) -> web.Response:
    return _answer(False, f"Conference {action} Conference {form['ConferenceName']} not found")


async def record_start(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    name = _need(form, "ConferenceName")
    fmt = form.get("FileFormat") or "mp3"
    if fmt not in ("mp3", "wav"):
        raise LegacyError("FileFormat Parameter must be 'mp3' or 'wav'")
    room = manager.conferences.get(account.auth_id, name)
    if room is None:
        return _not_found("RecordStart", form)
    try:
        stem = recording_stem(form.get("FileName"))
    except ValueError:
        raise LegacyError("Conference RecordStart Failed: invalid FileName") from None
    if room.recording is not None:
        return _answer(True, "Conference RecordStart Executed", RecordFile=room.recording["url"])
    # As RecordStart: the file lands in the account's recordings as FileName (else a uuid
    # name; FilePath is not used), and RecordFile is its URL (served like a call's recording).
    recording_id = str(uuid.uuid4())
    file = f"{stem or recording_id}.{fmt}"
    path = manager.recording_path(file, account.auth_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(room.members.values()), None)
    call = manager.calls.get(first.call_uuid) if first is not None else None
    if call is not None:
        url = manager.recording_url(call, file)
    else:
        url = f"{manager.public_url}/v0.1/Recording/{account.auth_id}/{file}"
    room.start_recording(str(path), fmt, url, recording_id)
    return _answer(True, "Conference RecordStart Executed", RecordFile=url)


async def record_stop(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    room = _room(manager, account, form)
    _need(form, "RecordFile")
    if room is None:
        return _not_found("RecordStop", form)
    room.stop_recording()
    return _answer(True, "Conference RecordStop Executed")


async def play(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    _need(form, "ConferenceName")
    source = _need(form, "FilePath")
    raw = _need(form, "MemberID")
    room = _room(manager, account, form)
    if room is None:
        return _not_found("Play", form)
    from ...app.sources import MediaCache  # noqa: PLC0415

    if not (is_http_url(source) or source.startswith("/")):
        raise LegacyError("Conference Play Failed")
    cache = MediaCache(manager.data_dir / "cache" / "media", allowed_dirs=(manager.data_dir,))
    try:
        path = await cache.path_for(source)
    except Exception:
        return _answer(False, "Conference Play Failed")
    members = None if raw == "all" else _targets(room, raw)
    if members is not None and not members:
        return _answer(False, f"Conference Play Non-Existant ID {raw}")
    await manager.conferences.play_url(room, members, path)
    return _answer(True, "Conference Play Executed")


async def speak(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    from ...app.sources import SHARED_TTS_CACHE, espeak_voice  # noqa: PLC0415

    _need(form, "ConferenceName")
    text = _need(form, "Text")
    raw = _need(form, "MemberID")
    room = _room(manager, account, form)
    if room is None:
        return _not_found("Speak", form)
    members = None if raw == "all" else _targets(room, raw)
    if members is not None and not members:
        return _answer(False, f"Conference Speak Non-Existant ID {raw}")
    voice = espeak_voice("WOMAN", "en-US")
    await manager.conferences.speak(room, members, text, voice, SHARED_TTS_CACHE)
    return _answer(True, "Conference Speak Executed")


def _listing(room: Room, manager: CallManager, form: dict[str, str]) -> dict[str, Any]:
    mfilter = {i.strip() for i in form.get("MemberFilter", "").split(",") if i.strip()}
    ufilter = {i.strip() for i in form.get("CallUUIDFilter", "").split(",") if i.strip()}
    only_muted = form.get("MutedFilter") == "true"
    only_deaf = form.get("DeafFilter") == "true"
    now = time.time()
    members = []
    for m in room.members.values():
        if mfilter or ufilter or only_muted or only_deaf:
            if not (
                (m.member_id in mfilter)
                or (m.call_uuid in ufilter)
                or (only_muted and m.muted)
                or (only_deaf and m.deaf)
            ):
                continue
        call = manager.calls.get(m.call_uuid)
        spec = getattr(call, "spec", None)
        members.append(
            {
                "MemberID": m.member_id,
                "Deaf": m.deaf,
                "Muted": m.muted,
                "CallUUID": m.call_uuid,
                "CallName": getattr(spec, "caller_name", None) or "",
                "CallNumber": getattr(spec, "from_", "") or "",
                "JoinTime": str(int(now - m.joined_at)),
            }
        )
    return {
        "ConferenceUUID": room.uuid,
        "ConferenceRunTime": str(int(now - room.created_at)),
        "ConferenceName": room.name,
        "ConferenceMemberCount": str(len(room.members)),
        "Members": members,
    }


async def list_members(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    room = _room(manager, account, form)
    if room is None:
        return _not_found("ListMembers", form)
    return _answer(
        True, "Conference ListMembers Executed", List={room.name: _listing(room, manager, form)}
    )


async def list_rooms(
    request: web.Request, account: AccountLimits, manager: CallManager, form: dict[str, str]
) -> web.Response:
    rooms = manager.conferences.rooms(account.auth_id)
    listing = {r.name: _listing(r, manager, form) for r in rooms}
    return _answer(True, "Conference List Executed", List=listing)


def _endpoints() -> dict[str, _Handler]:
    return {
        "ConferenceMute": _member_action("Mute", lambda m, r, ms: r.set_mute(ms, True)),
        "ConferenceUnmute": _member_action("Unmute", lambda m, r, ms: r.set_mute(ms, False)),
        "ConferenceDeaf": _member_action("Deaf", lambda m, r, ms: r.set_deaf(ms, True)),
        "ConferenceUndeaf": _member_action("Undeaf", lambda m, r, ms: r.set_deaf(ms, False)),
        "ConferenceKick": _member_action("Kick", lambda m, r, ms: r.kick(ms)),
        "ConferenceHangup": _member_action("Hangup", _hangup),
        "ConferenceRecordStart": record_start,
        "ConferenceRecordStop": record_stop,
        "ConferencePlay": play,
        "ConferenceSpeak": speak,
        "ConferenceListMembers": list_members,
        "ConferenceList": list_rooms,
    }


#: ``name -> handler`` (wrapped by :func:`~softswitch.api.legacy.routes.endpoint`).
CONFERENCE_ENDPOINTS: dict[str, _Handler] = _endpoints()
