"""The SIP doors of a running server (issue 13): an unsolicited INVITE draws one stateless
603 and nothing more, out-of-dialog answers are rate-limited per source, and with an
allow-list strangers get no answer at all while our own calls (and the trunks) still work.
Real UDP sockets against a real :class:`Server` on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from softswitch.config import Gateway
from softswitch.server import Server
from tests.conftest import needs_sipp
from tests.peers import plivo_api as api
from tests.peers.plivo_api import make_config, sipp_done, wait_record

sdk_base = api.sdk_base


def invite(n: int, port: int) -> bytes:
    return (
        f"INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-door-{n};rport\r\n"
        f"From: <sip:spoofed@127.0.0.1>;tag=d{n}\r\nTo: <sip:1000@127.0.0.1>\r\n"
        f"Call-ID: door-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:spoofed@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def exchange(target: int, datagrams: list[bytes], listen: float) -> list[bytes]:
    """Send ``datagrams`` from one socket; collect every answer until ``listen`` s pass
    without one (bounded: at most 1000 answers)."""
    answers: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for data in datagrams:
            s.sendto(data.replace(b"PORT", str(port).encode()), ("127.0.0.1", target))
        s.settimeout(listen)
        while len(answers) < 1000:
            try:
                answers.append(s.recv(65535))
            except TimeoutError:
                break
    return answers


async def started(tmp_path: Path, **over: Any) -> Server:
    server = Server(make_config(tmp_path, **over))
    await server.start()
    return server


async def test_unsolicited_invite_gets_a_single_603(tmp_path: Path) -> None:
    server = await started(tmp_path)
    try:
        # Timer G would retransmit a stateful 603 at 0.5 s, 1.5 s, 3.5 s...: listen 2 s.
        answers = await asyncio.to_thread(exchange, server.ua.local_port, [invite(1, 0)], 2.0)
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [
            b"SIP/2.0 603 Decline (inbound calls are not served)"
        ]
        assert b";tag=" in answers[0].split(b"\r\nTo:", 1)[1].split(b"\r\n", 1)[0]
    finally:
        await server.stop(mode="hangup", drain_timeout_s=1.0)


async def test_a_flood_from_one_source_is_answered_within_its_rate(tmp_path: Path) -> None:
    server = await started(tmp_path)  # the defaults: 5 answers/s, 10 at once
    try:
        started_at = time.monotonic()
        answers = await asyncio.to_thread(
            exchange, server.ua.local_port, [invite(n, 0) for n in range(200)], 0.5
        )
        elapsed = time.monotonic() - started_at
        assert 10 <= len(answers) <= 10 + 5 * elapsed + 1, (len(answers), elapsed)
        stats = server.ua.sip.stats
        assert stats["dropped_rate_limited"] == 200 - len(answers)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=1.0)


@needs_sipp
@pytest.mark.peer
async def test_allow_list_silences_strangers_but_not_our_calls(
    tmp_path: Path, sipp: Any, webhook_receiver: Any, sdk_base: Any
) -> None:
    """Only 192.0.2.0/24 may talk to us: an OPTIONS from loopback gets nothing. A call to a
    loopback sipp callee dialled by URI still rings, answers and is hung up by the callee
    (its BYE is inside our dialog); a trunk on loopback makes loopback an allowed peer."""
    callee = sipp("uas_callee_bye.xml")
    receiver = await webhook_receiver(
        routes={"/answer": '<?xml version="1.0"?><Response><Wait length="10"/></Response>'}
    )
    options = [
        b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-o1;rport\r\n"
        b"From: <sip:probe@127.0.0.1>;tag=o\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: o1@x\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ]
    server = await started(tmp_path, sip_allowed_peers=["192.0.2.0/24"])
    try:
        assert await asyncio.to_thread(exchange, server.ua.local_port, options, 0.5) == []
        assert server.ua.sip.stats["dropped_not_allowed"] == 1
        sdk_base(server.base_url)
        client = api.sdk_client(server.base_url)
        resp = await api.sdk(
            client.calls.create,
            from_="1000",
            to_=callee.uri,
            answer_url=receiver.url("/answer"),
            hangup_url=receiver.url("/hangup"),
        )
        hangup = (await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=10)).params
        assert hangup["HangupSource"] == "Callee" and hangup["CallStatus"] == "completed"
        await wait_record(server, resp.request_uuid)
        await sipp_done(callee)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=1.0)
    (tmp_path / "t").mkdir()
    trunked = await started(
        tmp_path / "t",
        sip_allowed_peers=["192.0.2.0/24"],
        gateways=[Gateway(name="pbx", host="127.0.0.1", port=5060)],
    )
    try:
        answers = await asyncio.to_thread(exchange, trunked.ua.local_port, options, 2.0)
        assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"SIP/2.0 200 OK"]
    finally:
        await trunked.stop(mode="hangup", drain_timeout_s=1.0)
