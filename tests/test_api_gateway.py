"""Numbers routed through a configured trunk: prefix selection, digit rewriting and the
trunk's digest credentials, through the Plivo API with the official SDK."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import plivo
import plivo.rest.client as plivo_client
import pytest

from softswitch.config import Gateway
from softswitch.server import Server
from tests.conftest import needs_sipp
from tests.peers.xml_app import AUTH_ID, AUTH_TOKEN, HOLD, make_config

pytestmark = [needs_sipp, pytest.mark.peer]


async def start_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateways: list[Gateway]) -> Server:
    """A real server with these trunks, and the plivo SDK pointed at it."""
    server = Server(make_config(tmp_path, gateways=gateways))
    await server.start()
    for name in ("API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1", "API_VOICE_BASE_URI_FALLBACK_2",
                 "PLIVO_API_BASE_URI"):
        monkeypatch.setattr(plivo_client, name, f"{server.base_url}/v1/Account")
    return server


async def test_number_via_trunk_with_credentials(tmp_path: Path, sipp: Any, monkeypatch: pytest.MonkeyPatch,
                                                 webhook_receiver: Any) -> None:
    trunk = sipp("uas_auth_401.xml")  # checks alice/secret with sipp's verifyauth, then BYEs
    other = sipp("uas_busy.xml")  # a second trunk for another prefix: must not be used
    gateways = [
        Gateway(name="uk", host="127.0.0.1", port=other.port, prefixes=["44"]),
        Gateway(name="us", host="127.0.0.1", port=trunk.port, prefixes=["1"], strip=1, add_prefix="001",
                username="alice", password="secret"),
    ]
    web = await webhook_receiver(routes={"/answer": HOLD})
    server = await start_server(tmp_path, monkeypatch, gateways)
    try:
        client = plivo.RestClient(AUTH_ID, AUTH_TOKEN)
        resp = await asyncio.to_thread(client.calls.create, from_="+12025550000", to_="+14155550100",
                                       answer_url=web.url("/answer"), hangup_url=web.url("/hangup"))
        assert resp.message == "call fired"
        answer = (await web.wait_for(path="/answer", timeout=15))[0]
        assert answer.params["To"] == "+14155550100"
        hang = (await web.wait_for(path="/hangup", timeout=15))[0].params
        assert hang["HangupSource"] == "Callee" and hang["CallStatus"] == "completed", hang
        await asyncio.to_thread(trunk.assert_ok)
        # The INVITE went to the "us" trunk as 0014155550100 (strip 1, add 001).
        log = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))
        assert "INVITE sip:0014155550100@127.0.0.1" in log
        assert other.proc.poll() is None  # the UK trunk never got a call
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)


async def test_trunk_codecs_restrict_the_offer(tmp_path: Path, sipp: Any, monkeypatch: pytest.MonkeyPatch,
                                               webhook_receiver: Any) -> None:
    """A trunk's configured ``codecs`` are what calls through it offer: sipp's scenario checks
    the INVITE offers PCMA only (payload 8 and telephone-event), then answers PCMA."""
    trunk = sipp("uas_codecs_pcma.xml")
    gateways = [Gateway(name="eu", host="127.0.0.1", port=trunk.port, prefixes=["33"], codecs=["PCMA"])]
    web = await webhook_receiver(routes={"/answer": HOLD})
    server = await start_server(tmp_path, monkeypatch, gateways)
    try:
        client = plivo.RestClient(AUTH_ID, AUTH_TOKEN)
        resp = await asyncio.to_thread(client.calls.create, from_="+12025550000", to_="+33155550100",
                                       answer_url=web.url("/answer"), hangup_url=web.url("/hangup"),
                                       time_limit=2)
        assert resp.message == "call fired"
        await web.wait_for(path="/answer", timeout=15)
        await asyncio.to_thread(trunk.assert_ok)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)


async def test_trunk_timeout_caps_the_ring_time(tmp_path: Path, sipp: Any, monkeypatch: pytest.MonkeyPatch,
                                                webhook_receiver: Any) -> None:
    """``timeout_s`` of a trunk caps how long calls through it ring (the API asked for 60 s)."""
    trunk = sipp("uas_ring_cancel.xml")  # rings until our CANCEL
    gateways = [Gateway(name="slow", host="127.0.0.1", port=trunk.port, prefixes=["49"], timeout_s=1)]
    web = await webhook_receiver(routes={"/answer": HOLD})
    server = await start_server(tmp_path, monkeypatch, gateways)
    try:
        client = plivo.RestClient(AUTH_ID, AUTH_TOKEN)
        await asyncio.to_thread(client.calls.create, from_="+12025550000", to_="+4930555010",
                                answer_url=web.url("/answer"), hangup_url=web.url("/hangup"),
                                ring_timeout=60)
        hang = (await web.wait_for(path="/hangup", timeout=10))[0].params
        assert hang["HangupCauseName"] == "No Answer" or hang["CallStatus"] == "no-answer", hang
        assert float(hang.get("Duration", "0")) == 0
        await asyncio.to_thread(trunk.assert_ok)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)
