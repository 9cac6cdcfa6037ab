"""The few call-manager paths only a scripted stand-in dialer can stage.

Everything else in the Plivo API suite talks SIP to real peers (``test_api_plivo.py``,
``test_api_plivo_sipp.py``, ``test_api_plivo_baresip.py``). The stand-in here replaces the
SIP user agent (``Server(dialer=...)``) because these cases depend on *when* the user agent
returns or on it misbehaving, which no real peer can arrange:

* an API hangup that lands while ``UserAgent.dial()`` has not returned yet (the real
  ``dial()`` sends the INVITE synchronously and returns at once, so the window is a few
  microseconds wide: only a dialer that blocks on purpose holds it open);
* ``dial()`` failing with an unexpected exception (the real one only does so while the user
  agent is closing);
* a leg whose event stream ends without ``Terminated`` (a broken user agent).

The server, SQLite store, webhook outbox, HTTP receiver and SDK are real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from sip import causes
from softswitch.events import Answered, Ringing, Terminated, Trying
from softswitch.server import Server
from tests.peers import plivo_api as api
from tests.peers.plivo_api import make_config, sdk, sdk_client, sig_ok
from tests.peers.webhooks import WebhookReceiver

receiver = api.receiver
sdk_base = api.sdk_base


class StandInLeg:
    """Quacks like ``softswitch.ua.OutboundCall`` as far as the call manager uses it."""

    def __init__(self) -> None:
        self.call_id = "stand-in"
        self.hangups: list[str] = []
        self._events: list[Any] = []  # None stands for "the stream just stops"
        self._changed = asyncio.Event()

    def emit(self, ev: Any) -> None:
        self._events.append(ev)
        self._changed.set()

    async def events(self) -> AsyncIterator[Any]:
        i = 0
        while True:
            while i < len(self._events):
                ev = self._events[i]
                i += 1
                if ev is None:
                    return
                yield ev
                if isinstance(ev, Terminated):
                    return
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), 10)

    async def hangup(self, cause: str | None = None, source: str = "caller") -> None:
        self.hangups.append(cause or "")
        answered = any(isinstance(e, Answered) for e in self._events)
        if answered:
            self.emit(Terminated(time.time(), cause or causes.NORMAL_CLEARING, None, "BYE", source))
        else:
            self.emit(Terminated(time.time(), causes.ORIGINATOR_CANCEL, 487, "CANCEL", source))

    async def send_digits(self, digits: str, mode: str = "auto", tone_ms: int | None = None) -> None:
        pass


class StandInDialer:
    """``dial()`` waits for :attr:`release` before returning (or raising :attr:`error`)."""

    def __init__(self, leg: StandInLeg | None = None, error: Exception | None = None) -> None:
        self.leg = leg or StandInLeg()
        self.error = error
        self.dialing = asyncio.Event()
        self.release = asyncio.Event()

    async def dial(self, target: str, **kwargs: Any) -> StandInLeg:
        self.dialing.set()
        await asyncio.wait_for(self.release.wait(), 10)
        if self.error is not None:
            raise self.error
        return self.leg


async def _server(tmp_path: Any, sdk_base: Any, dialer: StandInDialer) -> Server:
    server = Server(make_config(tmp_path), dialer=dialer)
    await server.start()
    sdk_base(server.base_url)
    return server


async def test_cancel_while_the_invite_goes_out(tmp_path: Any, sdk_base: Any, receiver: WebhookReceiver) -> None:
    dialer = StandInDialer()
    server = await _server(tmp_path, sdk_base, dialer)
    try:
        c = sdk_client(server.base_url)
        r = await sdk(c.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"))
        await asyncio.wait_for(dialer.dialing.wait(), 5)
        await sdk(c.calls.cancel, r.request_uuid)  # dial() has not returned: no leg to CANCEL yet
        dialer.leg.emit(Trying(time.time()))
        dialer.release.set()
        # as soon as dial() returns the manager cancels the leg, before any answer is seen
        p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=5)).params
        assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("cancel", "ORIGINATOR_CANCEL",
                                                                           "API Request")
        assert len(dialer.leg.hangups) == 1
        dialer.leg.emit(Answered(time.time()))  # a 200 OK that crossed the CANCEL changes nothing
        await asyncio.sleep(0.1)
        assert not receiver.of("/answer")
        assert len(receiver.of("/hangup")) == 1
        sig_ok(receiver)
    finally:
        await server.stop(drain_timeout_s=1.0)


async def test_dial_fails_unexpectedly(tmp_path: Any, sdk_base: Any, receiver: WebhookReceiver) -> None:
    dialer = StandInDialer(error=RuntimeError("user agent is not running"))
    dialer.release.set()
    server = await _server(tmp_path, sdk_base, dialer)
    try:
        c = sdk_client(server.base_url)
        r = await sdk(c.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"))
        p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=5)).params
        assert (p["CallStatus"], p["HangupSource"]) == ("failed", "Error")
        rec = server.store.get_call_by_request(api.AUTH_ID, r.request_uuid)
        assert rec is not None and "not running" in (rec["error"] or "")
    finally:
        await server.stop(drain_timeout_s=1.0)


async def test_event_stream_ending_without_terminated_closes_the_record(tmp_path: Any, sdk_base: Any,
                                                                        receiver: WebhookReceiver) -> None:
    leg = StandInLeg()
    dialer = StandInDialer(leg)
    dialer.release.set()
    leg.emit(Ringing(time.time(), 180, "Ringing"))
    leg.emit(None)
    server = await _server(tmp_path, sdk_base, dialer)
    try:
        c = sdk_client(server.base_url)
        r = await sdk(c.calls.create, from_="1000", to_="sip:bob@127.0.0.1", answer_url=receiver.url("/answer"),
                      hangup_url=receiver.url("/hangup"))
        p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=5)).params
        assert p["CallStatus"] == "failed" and p["HangupSource"] == "Unknown"
        assert (await sdk(c.live_calls.list_ids)).calls == []
    finally:
        await server.stop(drain_timeout_s=1.0)
