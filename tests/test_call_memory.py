"""Ended calls leave nothing behind (issue #13: the soak's RSS grew ~37 KiB per call).

A real in-process :class:`Server` places calls through the Plivo API to a sipp callee; each
answer document holds its call one second, then the server hangs up. Once every call has
ended and its SIP state has lingered out, the number of live call objects (the manager's
``Call``, both legs, the endpoint's call record, dialogs, transactions, media streams) is
back to what it was before the calls: counted with the cyclic collector **off**, because
:class:`softswitch.process.GcPolicy` freezes the live heap while calls are up, so anything
only the collector could free would stay for as long as the server is busy.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sip.transaction import TimerConfig
from softswitch.config import Limits
from tests.conftest import needs_sipp, wait_until
from tests.peers import plivo_api as api
from tests.peers.webhooks import Reply, WebhookReceiver
from tests.peers.webhooks import Request as WebhookRequest

pytestmark = [pytest.mark.peer, needs_sipp]

sdk_base = api.sdk_base

CALLS = 12
#: The per-call objects counted (module, class name): none may outlive its call.
TRACKED = {
    ("softswitch.calltable", "Call"),
    ("softswitch.ua", "OutboundCall"),
    ("softswitch.callcontrol", "LiveCallControl"),
    ("softswitch.timers", "CallTimers"),
    ("sip.aio.ua", "OutboundCall"),
    ("sip._endpoint_types", "ClientCall"),
    ("sip.dialog", "Dialog"),
    ("sip.invite", "ClientInviteSession"),
    ("sip.transaction", "ClientInviteTransaction"),
    ("sip.transaction", "ClientNonInviteTransaction"),
    ("sip.transaction", "ServerNonInviteTransaction"),
    ("media.engine._stream", "MediaStream"),
}


def live_call_objects() -> Counter[str]:
    """The tracked objects alive now, frozen ones included (no collection is run)."""
    gc.unfreeze()  # frozen objects are not in gc.get_objects(); the policy freezes again
    return Counter(
        f"{type(o).__module__}.{type(o).__qualname__}"
        for o in gc.get_objects()
        if (type(o).__module__, type(o).__qualname__) in TRACKED
    )


def hold_one_second(request: WebhookRequest) -> Reply:
    if request.path.startswith("/answer"):
        return '<?xml version="1.0"?><Response><Wait length="1"/></Response>'
    return (200, "ok", "text/plain")


async def test_ended_calls_are_freed_without_the_cyclic_collector(
    sipp: Any, tmp_path: Path, sdk_base: Any, webhook_receiver: Any
) -> None:
    callee = sipp("uas_answer.xml", calls=CALLS)  # answers; our BYE ends each call
    receiver: WebhookReceiver = await webhook_receiver(
        WebhookReceiver(auth_token=api.AUTH_TOKEN, respond=hold_one_second)
    )
    limits = Limits(cps=100.0, max_concurrent=100, max_queue=100, bulk_max=1000)
    server = await api.start_server(api.make_config(tmp_path, limits=limits), sdk_base)
    # Ended SIP calls and their legs linger (retransmissions) 32 s by default; 0.5 s here.
    server.ua.config.linger = 0.5
    endpoint = server.ua.sip.endpoint
    endpoint.config.linger = 0.5
    # An accepted INVITE transaction absorbs 2xx retransmissions for Timer M = 64*T1
    # (RFC 6026), a BYE's for Timer K = T4: 3.2 s and 0.5 s here, on loopback.
    endpoint.timer_config = TimerConfig(t1=0.05, t2=endpoint.timer_config.t2, t4=0.5)
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # from here only reference counting frees anything
    try:
        baseline = live_call_objects()
        body = {
            "from": "1000",
            "to": callee.uri,
            "answer_url": receiver.url("/answer"),
            "answer_method": "GET",
            "hangup_url": receiver.url("/hangup"),
            "hangup_method": "POST",
        }
        url = f"{server.base_url}/v1/Account/{api.AUTH_ID}/Call/"
        async with aiohttp.ClientSession(headers=api.basic()) as http:
            for _ in range(CALLS):
                async with http.post(url, json=body) as resp:
                    assert resp.status == 201, await resp.text()
        await receiver.wait_for(
            lambda h: h.path == "/hangup" and len(receiver.of("/hangup")) >= CALLS, timeout=30
        )
        assert {h.params["HangupCause"] for h in receiver.of("/hangup")} == {"NORMAL_CLEARING"}
        await asyncio.to_thread(
            callee.assert_ok, 15
        )  # every BYE answered: nothing left to retransmit

        # The manager, the user agent and the endpoint forget the calls once they linger out.
        def held() -> dict[str, int]:
            return {
                "calls": len(server.manager.table.calls),
                "legs": len(server.ua._legs),
                "endpoint calls": len(endpoint._calls),
                "client transactions": len(endpoint._client),
                "server transactions": len(endpoint._server),
            }

        try:
            await wait_until(lambda: not any(held().values()), timeout=15)
        except AssertionError:
            raise AssertionError(f"ended calls still held: {held()}") from None
        await asyncio.sleep(0)  # the forgetting callbacks have returned
        left = live_call_objects() - baseline
        assert not left, f"per-call objects still alive after {CALLS} calls: {dict(left)}"
    finally:
        if was_enabled:
            gc.enable()
        await server.stop(mode="hangup", drain_timeout_s=2.0)
