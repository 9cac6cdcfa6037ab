"""Conference rooms: who is in which room, what each member may do, and the room's events.

Dialect-neutral. A room is mixed on the media clock by :class:`media.conference.Conference`
(one per room); this module owns what happens around the mix:

* :class:`Conferences` (one per :class:`~softswitch.call.CallManager`): rooms by
  ``(account, name)``, made on the first join and dropped when the last member leaves or the
  room ends; the member a call is (``member_of(call_uuid)``).
* :class:`Room`: members in join order with their member id (``"1"``, ``"2"``... per room);
  ``started`` once a member with ``start_on_enter`` is in (before that members are held
  out of the mix and hear the wait sound, as while alone); the room's time limit, its
  recording (the whole mix; from two members on unless ``record_when_alone``; ``trim``),
  coaches (a member heard by the member it coaches only: the mixer's whisper), a member's own
  time limit, and the operations the APIs call: mute/unmute, deaf/undeaf, hold/unhold (out of
  the mix both ways), kick, play and speak to the room or to members, record start/stop, end
  (an API hangs up members' calls through the call manager, so their records say who ended
  them).
* :meth:`Conferences.run_member`: one call in a room for the length of a ``Conference``
  verb (:class:`softswitch.app.verbs.Conference`): enter sound, events, ``hangupOnStar``,
  ``digitsMatch``, DTMF relayed to the others, wait sound while alone or not started; it
  returns when the member leaves (hangup, ``*``, kicked, room ended...).

Events go to the member's ``on_event`` as :class:`~softswitch.app.verbs.ConferenceEvent`
(the vocabulary names them); only the actions in the verb's ``status_events`` are sent.

One process mixes a room: with several workers, the call manager claims each room made here
for this worker (``on_room_opened``) and the API requests naming it are forwarded here; a
call joining a room must run on the worker that owns it (see docs/ARCHITECTURE.md,
"Conferences and workers").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from softswitch.app.control import CallHungUp
from softswitch.app.verbs import Conference as ConferenceVerb
from softswitch.app.verbs import ConferenceEvent

if TYPE_CHECKING:
    from media.conference import Conference as MediaConference
    from media.conference import MixResult
    from media.engine import MediaEngine, MediaStream

log = logging.getLogger("softswitch.conference")

__all__ = ["BEEP_FREQ_HZ", "Conferences", "Member", "Room"]

#: A trimmed recording leaves out frames whose peak is under this (about -50 dBFS) at its
#: start and end; a silence longer than TRIM_HOLD_FRAMES (5 min) is written anyway.
TRIM_PEAK = 100
TRIM_HOLD_FRAMES = 15_000

#: enter/exit ``beep:1``/``beep:2``: 300 ms of 700 Hz (then 200 ms of silence), once or twice.
BEEP_FREQ_HZ = 700.0
BEEP_MS = 300
BEEP_GAP_MS = 200
BEEP_LEVEL_DBM0 = -13.0


def beep_source(count: int) -> Any:
    from media.play import ToneSource  # noqa: PLC0415

    return ToneSource(
        (BEEP_FREQ_HZ,),
        (BEEP_MS + BEEP_GAP_MS) * count,
        BEEP_LEVEL_DBM0,
        cadence=(BEEP_MS, BEEP_GAP_MS),
    )


@dataclass(eq=False)
class Member:
    """One call in a room."""

    member_id: str
    call_uuid: str
    stream: MediaStream
    slot: int
    verb: ConferenceVerb
    joined_at: float
    on_event: Callable[[ConferenceEvent], None]
    hangup: Callable[[str, str], Awaitable[None]]
    left: asyncio.Future[str]
    muted: bool = False
    deaf: bool = False
    hold: bool = False
    digits: str = ""

    def info(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "call_uuid": self.call_uuid,
            "muted": self.muted,
            "deaf": self.deaf,
            "hold": self.hold,
            "joined_at": self.joined_at,
        }


@dataclass(eq=False)
class Room:
    """One conference room; see the module docstring."""

    name: str
    account: str
    media: MediaConference
    owner: Conferences
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)
    members: dict[str, Member] = field(default_factory=dict)
    started: bool = False
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _next_id: int = 0
    _time_limit: asyncio.TimerHandle | None = None
    _recording: dict[str, Any] | None = None
    _by_slot: dict[int, Member] = field(default_factory=dict)

    # --- the mix ---------------------------------------------------------------------------

    def _apply(self, member: Member) -> None:
        """The member's mixer flags: held out of the mix (and hearing nothing of it) until
        the room starts."""
        out = not self.started or member.hold
        self.media.mixer.set_muted(member.slot, member.muted or out)
        self.media.mixer.set_deaf(member.slot, member.deaf or out)

    def _on_mix(self, result: MixResult) -> None:
        # On the media clock: hand the events over to the loop.
        asyncio.get_running_loop().call_soon(self._mix_events, result)

    def _mix_events(self, result: MixResult) -> None:
        for slot in result.started:
            m = self._by_slot.get(slot)
            if m is not None:
                self.emit(m, "speaking")
        for slot in result.stopped:
            m = self._by_slot.get(slot)
            if m is not None:
                self.emit(m, "stopped-speaking")
        if result.floor_changed and result.floor is not None:
            m = self._by_slot.get(result.floor)
            if m is not None and m.verb.floor_event:
                self.emit(m, "floor")

    def emit(self, member: Member, action: str, **extra: Any) -> None:
        if action not in member.verb.status_events and not (
            action == "floor" and member.verb.floor_event
        ):
            return
        try:
            member.on_event(self.event(member, action, **extra))
        except Exception:
            log.exception("conference %s: event %s failed", self.name, action)

    def event(self, member: Member, action: str, **extra: Any) -> ConferenceEvent:
        return ConferenceEvent(
            action=action,
            room=self.name,
            room_uuid=self.uuid,
            member_id=member.member_id,
            call_uuid=member.call_uuid,
            members=len(self.members),
            muted=member.muted,
            deaf=member.deaf,
            hold=member.hold,
            **extra,
        )

    # --- membership --------------------------------------------------------------------------

    def add(
        self,
        stream: MediaStream,
        call_uuid: str,
        verb: ConferenceVerb,
        on_event: Callable[[ConferenceEvent], None],
        hangup: Callable[[str, str], Awaitable[None]],
    ) -> Member:
        self._next_id += 1
        slot = self.media.join(stream, muted=True, deaf=True)
        member = Member(
            member_id=str(self._next_id),
            call_uuid=call_uuid,
            stream=stream,
            slot=slot,
            verb=verb,
            joined_at=time.time(),
            on_event=on_event,
            hangup=hangup,
            left=asyncio.get_running_loop().create_future(),
            muted=verb.muted,
            deaf=verb.deaf,
        )
        self.members[member.member_id] = member
        self._by_slot[slot] = member
        first_start = verb.start_on_enter and not self.started
        if first_start:
            self.started = True
            for m in self.members.values():
                self._apply(m)
        else:
            self._apply(member)
        self.owner._calls[call_uuid] = member
        self._rewhisper()
        self.emit(member, "enter")
        if first_start:
            self.emit(member, "start")
        self._touch()
        return member

    def remove(self, member: Member, reason: str) -> None:
        if self.members.pop(member.member_id, None) is None:
            return
        self._by_slot.pop(member.slot, None)
        self.media.leave(member.slot)
        if self.owner._calls.get(member.call_uuid) is member:
            del self.owner._calls[member.call_uuid]
        self._rewhisper()
        if not member.left.done():
            member.left.set_result(reason)
        if member.verb.end_on_exit and reason != "ended":
            self.end("end_on_exit")
        elif len(self.members) == 1:
            last = next(iter(self.members.values()))
            if not last.verb.stay_alone:
                self.end("alone")
        if not self.members:
            self.end("empty")
        self._touch()

    def _rewhisper(self) -> None:
        """Each coach is heard by the member it coaches only (nobody while that one is not in
        the room)."""
        by_call = {m.call_uuid: m for m in self.members.values()}
        for m in self.members.values():
            if m.verb.coach:
                target = by_call.get(m.verb.coach)
                self.media.mixer.set_whisper(m.slot, -1 if target is None else target.slot)

    def _touch(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def end(self, reason: str) -> None:
        """End the room: every member leaves (``ended``), the recording is finished."""
        if self.ended:
            return
        self.ended = True
        log.info("conference %s (%s) ends: %s", self.name, self.uuid, reason)
        for member in list(self.members.values()):
            self.emit(member, "end")
            self.remove(member, "ended")
        self.stop_recording()
        if self._time_limit is not None:
            self._time_limit.cancel()
        self.media.close()
        self.owner._drop(self)
        self._touch()

    def set_time_limit(self, seconds: int) -> None:
        """End the room ``seconds`` from now (replaces an earlier limit, as the framework's
        ``sched_api`` kick-all does)."""
        if self._time_limit is not None:
            self._time_limit.cancel()
        self._time_limit = asyncio.get_running_loop().call_later(seconds, self.end, "time_limit")

    def alone_or_waiting(self, member: Member) -> bool:
        return not self.started or len(self.members) < 2

    # --- operations (the APIs) ---------------------------------------------------------------

    def find(self, member_ids: str | list[str]) -> list[Member]:
        """``"all"`` or member ids (unknown ones skipped)."""
        if member_ids == "all" or member_ids == ["all"]:
            return list(self.members.values())
        ids = [member_ids] if isinstance(member_ids, str) else member_ids
        return [self.members[i] for i in ids if i in self.members]

    def set_mute(self, members: list[Member], muted: bool) -> list[str]:
        for m in members:
            m.muted = muted
            self._apply(m)
            self.emit(m, "mute" if muted else "unmute")
        return [m.member_id for m in members]

    def set_hold(self, members: list[Member], hold: bool) -> list[str]:
        """On hold: out of the mix both ways (nobody hears them, they hear nothing of the
        room) until taken off hold; ``hold``/``unhold`` events."""
        for m in members:
            if m.hold != hold:
                m.hold = hold
                self._apply(m)
                self.emit(m, "hold" if hold else "unhold")
        return [m.member_id for m in members]

    def set_deaf(self, members: list[Member], deaf: bool) -> list[str]:
        for m in members:
            m.deaf = deaf
            self._apply(m)
        return [m.member_id for m in members]

    def kick(self, members: list[Member]) -> list[str]:
        """Out of the room; their calls go on with their documents."""
        for m in members:
            self.remove(m, "kicked")
        return [m.member_id for m in members]

    def play(self, source: Any, members: list[Member] | None = None) -> list[str]:
        """``source`` to the whole room (``members`` None) or to each member given (one
        source each: ``source`` is then a factory)."""
        if members is None:
            self.media.mixer.play(source)
            return [m.member_id for m in self.members.values()]
        for m in members:
            m.stream.play(source(), mix=True)
        return [m.member_id for m in members]

    def start_recording(
        self,
        path: str,
        fmt: str,
        url: str,
        recording_id: str,
        member: Member | None = None,
        *,
        when_alone: bool = True,
        trim: bool = False,
        on_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> bool:
        """Record the room's whole mix to ``path``; False when it already records.
        ``when_alone`` false: frames are written only while two members or more are in.
        ``trim``: leading and trailing silence are left out (frames whose peak is under
        :data:`TRIM_PEAK`; a silence is held back up to :data:`TRIM_HOLD_FRAMES` frames, then
        written). ``on_done(recording)`` is called once it stops (its ``duration_s``,
        ``started``, ``ended`` set)."""
        from media.record import Recorder  # noqa: PLC0415

        if self._recording is not None:
            return False
        recorder = Recorder(path, fmt)
        held: list[Any] = []  # trim: silent frames not written yet
        heard = False

        def tap(frame: Any) -> None:
            nonlocal heard
            if recorder.closed or not (when_alone or len(self.members) >= 2):
                return
            if not trim:
                recorder.write(frame)
                return
            if int(abs(frame).max(initial=0)) < TRIM_PEAK:
                if heard:
                    held.append(frame.copy())
                    if len(held) > TRIM_HOLD_FRAMES:
                        recorder.write(held.pop(0))
                return
            heard = True
            for quiet in held:
                recorder.write(quiet)
            held.clear()
            recorder.write(frame)

        self.media.add_recorder(tap)
        self._recording = {
            "recorder": recorder,
            "tap": tap,
            "url": url,
            "id": recording_id,
            "member": member,
            "started": time.time(),
            "on_done": on_done,
        }
        return True

    @property
    def recording(self) -> dict[str, Any] | None:
        return self._recording

    def stop_recording(self) -> dict[str, Any] | None:
        rec, self._recording = self._recording, None
        if rec is None:
            return None
        self.media.remove_recorder(rec["tap"])
        rec["duration_s"] = rec["recorder"].close()
        rec["ended"] = time.time()
        if rec["on_done"] is not None:
            try:
                rec["on_done"](rec)
            except Exception:
                log.exception("conference %s: recording callback failed", self.name)
        member = rec["member"]
        if member is not None:
            self.emit(
                member,
                "record",
                record_url=rec["url"],
                recording_id=rec["id"],
                recording_duration_s=round(rec["duration_s"]),
            )
        return rec

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "created_at": self.created_at,
            "members": [m.info() for m in self.members.values()],
            "recording": self._recording is not None,
        }


class Conferences:
    """Every room of one process (see the module docstring)."""

    def __init__(self, engine: Callable[[], MediaEngine | None]) -> None:
        self._engine = engine
        self._rooms: dict[tuple[str, str], Room] = {}
        self._calls: dict[str, Member] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Called when a room is made here and when it is dropped (the call manager claims
        #: and releases the room's ownership among workers).
        self.on_room_opened: Callable[[Room], None] | None = None
        self.on_room_closed: Callable[[Room], None] | None = None

    def rooms(self, account: str) -> list[Room]:
        return [r for (a, _), r in self._rooms.items() if a == account]

    def get(self, account: str, name: str) -> Room | None:
        return self._rooms.get((account, name))

    def member_of(self, call_uuid: str) -> Member | None:
        return self._calls.get(call_uuid)

    def room_of(self, call_uuid: str) -> Room | None:
        member = self._calls.get(call_uuid)
        if member is None:
            return None
        for room in self._rooms.values():
            if room.members.get(member.member_id) is member:
                return room
        return None

    def _room(self, account: str, name: str, engine: MediaEngine) -> Room:
        from media.conference import Conference as MediaConference  # noqa: PLC0415

        room = self._rooms.get((account, name))
        if room is None:
            media = MediaConference(engine)
            room = Room(name=name, account=account, media=media, owner=self)
            media.on_mix = room._on_mix
            self._rooms[(account, name)] = room
            self._hook(self.on_room_opened, room)
        return room

    def _drop(self, room: Room) -> None:
        if self._rooms.get((room.account, room.name)) is room:
            del self._rooms[(room.account, room.name)]
            self._hook(self.on_room_closed, room)

    @staticmethod
    def _hook(hook: Callable[[Room], None] | None, room: Room) -> None:
        if hook is not None:
            try:
                hook(room)
            except Exception:
                log.exception("conference %s: room hook failed", room.name)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for room in list(self._rooms.values()):
            room.end("shutdown")

    # --- what the conference APIs do (dialect-neutral) ----------------------------------------

    async def play_url(self, room: Room, members: list[Member] | None, path: str) -> list[str]:
        """Play a fetched file (``path``) to the room, or to each member given."""
        from media.play import FileSource  # noqa: PLC0415

        if members is None:
            source = await asyncio.to_thread(FileSource, path, loop=1)
            return room.play(source)
        sources = [await asyncio.to_thread(FileSource, path, loop=1) for _ in members]
        it = iter(sources)
        return room.play(lambda: next(it), members)

    async def speak(
        self, room: Room, members: list[Member] | None, text: str, voice: str, tts: Any
    ) -> list[str]:
        """Text to speech (``tts``: a :class:`~softswitch.app.sources.TtsCache`) to the room
        or to each member given."""
        from media.play import ArraySource, tts_to_pcm  # noqa: PLC0415

        pcm = await tts.get(text, voice, lambda t, v: asyncio.to_thread(tts_to_pcm, t, voice=v))
        if members is None:
            return room.play(ArraySource(pcm, loop=1))
        return room.play(lambda: ArraySource(pcm, loop=1), members)

    @staticmethod
    def stop_member_play(members: list[Member]) -> list[str]:
        """Stop what was played to these members (their room audio goes on)."""
        for m in members:
            m.stream.stop_overlays()
        return [m.member_id for m in members]

    async def run_member(
        self,
        *,
        account: str,
        call_uuid: str,
        stream: MediaStream,
        engine: MediaEngine,
        verb: ConferenceVerb,
        on_event: Callable[[ConferenceEvent], None],
        record_path: Callable[[str], tuple[str, str, str]],
        sound: Callable[[str], Awaitable[Any]],
        ended: asyncio.Future[None],
        digit_hooks: list[Callable[[str], None]],
        hangup: Callable[[str, str], Awaitable[None]],
    ) -> ConferenceEvent:
        """One call in ``verb.name`` until it leaves; returns the ``result`` event."""
        room = self._room(account, verb.name, engine)
        if len(room.members) >= max(1, verb.max_members):
            log.info("conference %s is full (%d members)", verb.name, len(room.members))
            return ConferenceEvent("result", room.name, room.uuid, "", call_uuid, reason="full")
        member = room.add(stream, call_uuid, verb, on_event, hangup)
        log.info(
            "call %s: member %s of conference %s (%s)",
            call_uuid,
            member.member_id,
            room.name,
            room.uuid,
        )
        if verb.time_limit > 0:
            room.set_time_limit(verb.time_limit)
        member_limit = (
            asyncio.get_running_loop().call_later(
                verb.member_time_limit, room.remove, member, "time_limit"
            )
            if verb.member_time_limit > 0
            else None
        )
        recording: dict[str, Any] | None = None
        if verb.record and room.recording is None:
            path, url, rid = record_path(verb.record_file_format)
            room.start_recording(
                path,
                verb.record_file_format,
                url,
                rid,
                member,
                when_alone=verb.record_when_alone,
                trim=verb.record_trim,
            )
            recording = room.recording
        if verb.enter_sound:
            await self._room_sound(room, verb.enter_sound, sound)

        def on_digit(digit: str) -> None:
            self._digit(room, member, digit)

        digit_hooks.append(on_digit)
        music = asyncio.ensure_future(self._wait_music(room, member, sound))
        try:
            waits: set[asyncio.Future[Any]] = {member.left, ended}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if member_limit is not None:
                member_limit.cancel()
            music.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await music
            if on_digit in digit_hooks:
                digit_hooks.remove(on_digit)
            reason = member.left.result() if member.left.done() else "hangup"
            room.emit(member, "exit", reason=reason)
            room.remove(member, reason)
            if verb.exit_sound and not room.ended:
                await self._room_sound(room, verb.exit_sound, sound)
        result = room.event(
            member, "result", reason=reason, duration_s=round(time.time() - member.joined_at)
        )
        if recording is not None:
            from dataclasses import replace  # noqa: PLC0415

            result = replace(
                result,
                record_url=recording["url"],
                recording_id=recording["id"],
                recording_duration_s=round(recording.get("duration_s", 0)),
            )
        if reason == "hangup" and ended.done():
            raise CallHungUp
        return result

    async def _room_sound(
        self, room: Room, what: str, sound: Callable[[str], Awaitable[Any]]
    ) -> None:
        if what in ("beep:1", "beep:2"):
            room.media.mixer.play(beep_source(int(what[-1])))
            return
        try:
            source = await sound(what)
        except Exception as exc:
            log.warning("conference %s: cannot play %s: %s", room.name, what, exc)
            return
        if source is not None and not room.ended:
            room.media.mixer.play(source)

    async def _wait_music(
        self, room: Room, member: Member, sound: Callable[[str], Awaitable[Any]]
    ) -> None:
        """The wait sound while the member is alone or the room has not started."""
        url = member.verb.wait_sound
        if not url:
            return
        while not member.left.done() and not room.ended:
            changed = room.changed
            if not room.alone_or_waiting(member):
                await changed.wait()
                continue
            try:
                source = await sound(url)
            except Exception as exc:
                log.warning("conference %s: wait sound %s: %s", room.name, url, exc)
                return
            if source is None:
                return
            playing = member.stream.play(source)
            waiter = asyncio.ensure_future(changed.wait())
            try:
                both: set[asyncio.Future[Any]] = {playing, waiter}
                await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                if not playing.done():
                    playing.cancel()  # cancelling the future stops the source

    def _digit(self, room: Room, member: Member, digit: str) -> None:
        verb = member.verb
        if digit == "*" and verb.hangup_on_star:
            room.remove(member, "star")
            return
        if verb.relay_dtmf:
            for other in room.members.values():
                if other is not member and not other.deaf and not other.stream.closed:
                    with contextlib.suppress(Exception):
                        fut = other.stream.send_digits(digit)
                        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        if verb.digits_match:
            member.digits = (member.digits + digit)[-32:]
            for pattern in verb.digits_match:
                if member.digits.endswith(pattern):
                    member.digits = ""
                    room.emit(member, "digits", digits=pattern)
                    break
