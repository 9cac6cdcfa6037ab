"""The core's conference rooms on a running media clock, over loopback RTP without SIP: each
member is one of our streams connected to a "phone" stream that plays a tone and taps what
it hears. What a ``Conference`` verb's attributes do to the room: ``startConferenceOnEnter``
(held out until the room starts, hearing the wait sound), ``stayAlone``,
``endConferenceOnExit``, ``maxMembers``, ``timeLimit``, ``hangupOnStar``, ``digitsMatch``,
``relayDTMF``, exit sounds, and the events each member gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from media.engine import MediaConfig, MediaEngine, MediaStream
from media.play import ToneSource
from softswitch.app.control import CallHungUp
from softswitch.app.verbs import Conference, ConferenceEvent
from softswitch.conference import BEEP_FREQ_HZ, Conferences
from tests.conftest import media_ports

RATE = 8000


def level(frame: np.ndarray, freq: float) -> float:
    t = np.arange(frame.size) / RATE
    return float(
        abs(np.dot(frame.astype(np.float64), np.exp(-2j * np.pi * freq * t))) * 2 / frame.size
    )


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    eng = MediaEngine(MediaConfig(bind_host="127.0.0.1", **media_ports()))
    eng.start()
    yield eng
    await eng.stop()


@dataclass
class Phone:
    """One member: our stream in the room, the phone's stream on the other end."""

    ours: MediaStream
    phone: MediaStream
    task: asyncio.Task[Any] | None = None
    events: list[ConferenceEvent] = field(default_factory=list)
    heard: list[np.ndarray] = field(default_factory=list)
    digit_hooks: list[Any] = field(default_factory=list)
    ended: asyncio.Future[None] | None = None

    def hears(self, freq: float, last: int = 10) -> bool:
        frames = self.heard[-last:]
        return bool(frames) and min(level(f, freq) for f in frames) > 1000

    def silent(self, freq: float, last: int = 10) -> bool:
        frames = self.heard[-last:]
        return bool(frames) and max(level(f, freq) for f in frames) < 200

    def press(self, digits: str) -> None:
        for d in digits:
            for hook in list(self.digit_hooks):
                hook(d)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]


class Room:
    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.conferences = Conferences(lambda: engine)
        self.sounds: list[str] = []
        self.record_to = "/dev/null"

    async def sound(self, url: str) -> Any:
        self.sounds.append(url)
        return ToneSource((300.0,), None, -12.0)  # the "wait music" plays until stopped

    def join(self, freq: float | None, verb: Conference, uuid: str) -> Phone:
        ours, phone = self.engine.create_stream(), self.engine.create_stream()
        phone.apply_answer(ours.handle_offer(phone.create_offer()))
        if freq is not None:
            phone.play(ToneSource((freq,), None, -12.0))
        p = Phone(ours, phone)
        phone.add_tap(lambda f: p.heard.append(f.copy()))
        p.ended = asyncio.get_running_loop().create_future()

        async def hangup(cause: str, reason: str) -> None:
            if not p.ended.done():
                p.ended.set_result(None)

        p.task = asyncio.ensure_future(
            self.conferences.run_member(
                account="acct",
                call_uuid=uuid,
                stream=ours,
                engine=self.engine,
                verb=verb,
                on_event=p.events.append,
                record_path=lambda fmt: (self.record_to, "u", "r"),
                sound=self.sound,
                ended=p.ended,
                digit_hooks=p.digit_hooks,
                hangup=hangup,
            )
        )
        return p

    def room(self, name: str = "r") -> Any:
        return self.conferences.get("acct", name)


async def until(cond: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


ALL = frozenset({"enter", "exit", "start", "end", "digits", "floor", "mute", "unmute"})


async def test_start_on_enter_holds_members_out_until_the_room_starts(engine: MediaEngine) -> None:
    r = Room(engine)
    waiting = Conference(
        name="r", start_on_enter=False, wait_sound="http://h/moh.wav", status_events=ALL
    )
    a = r.join(400.0, waiting, "a")
    b = r.join(1000.0, waiting, "b")
    await until(lambda: r.room() is not None and len(r.room().members) == 2)
    await asyncio.sleep(0.4)
    # not started: nobody is mixed, both hear the wait sound (300 Hz)
    assert a.silent(1000.0) and b.silent(400.0)
    assert a.hears(300.0) and b.hears(300.0)
    assert r.sounds == ["http://h/moh.wav", "http://h/moh.wav"]
    c = r.join(2000.0, Conference(name="r", end_on_exit=True, status_events=ALL), "c")
    await until(lambda: a.hears(1000.0) and a.hears(2000.0))
    await until(lambda: a.silent(300.0))  # the wait sound stopped once the room started
    assert c.actions()[:2] == ["enter", "start"] and "start" not in a.actions()
    # c leaves (endConferenceOnExit): the room ends, a and b leave with "ended"
    c.ended.set_result(None)
    with pytest.raises(CallHungUp):
        await c.task
    ra, rb = await a.task, await b.task
    assert ra.reason == rb.reason == "ended" and ra.action == "result"
    assert a.actions()[-2:] == ["end", "exit"]
    assert r.room() is None


async def test_stay_alone_max_members_and_time_limit(engine: MediaEngine) -> None:
    r = Room(engine)
    a = r.join(400.0, Conference(name="r", stay_alone=False, max_members=2), "a")
    b = r.join(1000.0, Conference(name="r", max_members=2), "b")
    await until(lambda: r.room() is not None and len(r.room().members) == 2)
    full = await r.join(2000.0, Conference(name="r", max_members=2), "c").task
    assert full.reason == "full" and len(r.room().members) == 2
    b.ended.set_result(None)  # b hangs up: a is alone and may not stay
    with pytest.raises(CallHungUp):
        await b.task
    assert (await a.task).reason == "ended"
    # timeLimit: the room ends that many seconds after the member's entry
    t = r.join(400.0, Conference(name="t", time_limit=1), "t")
    u = r.join(1000.0, Conference(name="t"), "u")
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await asyncio.wait_for(t.task, 5)).reason == "ended"
    assert (await u.task).reason == "ended"
    assert 0.8 < loop.time() - start < 3.0


async def test_keys_hangup_on_star_digits_match_and_relay(engine: MediaEngine) -> None:
    r = Room(engine)
    a = r.join(
        None,
        Conference(
            name="r",
            hangup_on_star=True,
            digits_match=("12", "99"),
            exit_sound="beep:2",
            relay_dtmf=True,
        ),
        "a",
    )
    b = r.join(None, Conference(name="r", relay_dtmf=False, status_events=ALL), "b")
    await until(lambda: r.room() is not None and len(r.room().members) == 2)
    got: list[Any] = []
    b.phone.on_dtmf = got.append  # what the phone on b's line receives (RFC 4733)
    a.press("3129")
    await until(lambda: len(got) >= 4)
    assert "".join(e.digit for e in got) == "3129"  # relayed to b as a pressed them
    assert [e.digits for e in a.events if e.action == "digits"] == ["12"]
    a.press("*")
    assert (await a.task).reason == "star"
    # b hears the two exit beeps of a
    await until(lambda: sum(level(f, BEEP_FREQ_HZ) > 1000 for f in b.heard) >= 20)
    assert b.actions() == ["enter"]
    b.ended.set_result(None)
    with pytest.raises(CallHungUp):
        await b.task


async def test_a_coach_is_heard_by_the_coached_member_only_and_leaves_at_its_time_limit(
    engine: MediaEngine,
) -> None:
    r = Room(engine)
    agent = r.join(400.0, Conference(name="r"), "agent")
    caller = r.join(1000.0, Conference(name="r"), "caller")
    await until(lambda: r.room() is not None and len(r.room().members) == 2)
    coach = r.join(2000.0, Conference(name="r", coach="agent", member_time_limit=1), "coach")
    await until(lambda: agent.hears(2000.0))
    assert caller.silent(2000.0) and caller.hears(400.0)
    await until(lambda: coach.hears(400.0) and coach.hears(1000.0))
    # the coach's own time limit takes it out of the room (its call goes on)
    result = await asyncio.wait_for(coach.task, 5)
    assert result.reason == "time_limit" and 1 <= result.duration_s <= 3
    await until(lambda: agent.silent(2000.0))
    assert len(r.room().members) == 2
    for p in (agent, caller):
        p.ended.set_result(None)


async def test_a_trimmed_recording_leaves_out_the_silence_before_and_after(
    engine: MediaEngine, tmp_path: Any
) -> None:
    import wave

    r = Room(engine)
    r.record_to = str(tmp_path / "trim.wav")
    quiet = r.join(
        None,
        Conference(name="t", record=True, record_file_format="wav", record_trim=True),
        "quiet",
    )
    await until(lambda: r.room("t") is not None)
    await asyncio.sleep(1.0)  # silence: not recorded
    talker = r.join(1000.0, Conference(name="t"), "talker")
    await until(lambda: quiet.hears(1000.0))
    await asyncio.sleep(1.0)
    talker.ended.set_result(None)
    with pytest.raises(CallHungUp):
        await talker.task
    await asyncio.sleep(1.0)  # silence again: not recorded
    quiet.ended.set_result(None)
    with pytest.raises(CallHungUp):
        await quiet.task
    with wave.open(r.record_to, "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    seconds = pcm.size / RATE
    assert 0.8 <= seconds <= 1.8, seconds  # the tone, without the 2 s of silence around it
    assert level(pcm[:160], 1000.0) > 500 and level(pcm[-160:], 1000.0) > 500
