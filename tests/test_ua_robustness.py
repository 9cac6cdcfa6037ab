"""Bad input never stops the user agent: malformed requests get 400 with the reason,
malformed responses are dropped, and calls still work afterwards."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import needs_sipp


@pytest.fixture
async def ua():
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


def _exchange(port: int, data: bytes, wait: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(wait)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def _request(*, drop: str | None = None, extra: str = "", method: str = "OPTIONS", version: str = "SIP/2.0") -> bytes:
    lines = [
        f"{method} sip:softswitch@127.0.0.1 {version}",
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-robust;rport",
        "From: <sip:probe@127.0.0.1>;tag=p1",
        "To: <sip:softswitch@127.0.0.1>",
        "Call-ID: robust-1@127.0.0.1",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
    ]
    lines = [ln for ln in lines if not (drop and ln.startswith(drop + ":"))]
    return ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()


async def test_well_formed_options_gets_200(ua):
    answer = await asyncio.to_thread(_exchange, ua.local_port, _request())
    assert answer is not None and answer.startswith(b"SIP/2.0 200")


async def test_missing_call_id_gets_400_with_reason(ua):
    answer = await asyncio.to_thread(_exchange, ua.local_port, _request(drop="Call-ID"))
    assert answer is not None and answer.startswith(b"SIP/2.0 400")
    status_line = answer.split(b"\r\n", 1)[0].decode()
    assert "call-id" in status_line.lower(), status_line
    assert b"branch=z9hG4bK-robust" in answer  # addressed back through the Via we sent


async def test_bad_cseq_and_bad_content_length_get_400(ua):
    bad_cseq = _request().replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    answer = await asyncio.to_thread(_exchange, ua.local_port, bad_cseq)
    assert answer is not None and answer.startswith(b"SIP/2.0 400")
    bad_len = _request().replace(b"Content-Length: 0", b"Content-Length: 999")
    answer = await asyncio.to_thread(_exchange, ua.local_port, bad_len)
    assert answer is not None and answer.startswith(b"SIP/2.0 400")


async def test_wrong_version_gets_505(ua):
    answer = await asyncio.to_thread(_exchange, ua.local_port, _request(version="SIP/3.0"))
    assert answer is not None and answer.startswith(b"SIP/2.0 505")


async def test_garbage_and_malformed_responses_are_dropped(ua):
    for junk in (os.urandom(300), b"\x00\x01\x02", b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
                 b"SIP/2.0 abc Broken\r\n\r\n", "INVITE \u00e9\u00e9 SIP/2.0\r\n\r\n".encode()):
        assert await asyncio.to_thread(_exchange, ua.local_port, junk, 0.2) is None
    assert ua.stats["parse_errors"] >= 4
    answer = await asyncio.to_thread(_exchange, ua.local_port, _request())
    assert answer is not None and answer.startswith(b"SIP/2.0 200")  # still alive


async def test_unknown_dialog_gets_481_and_unknown_method_501(ua):
    bye = _request(method="BYE").replace(b"To: <sip:softswitch@127.0.0.1>", b"To: <sip:softswitch@127.0.0.1>;tag=zz")
    answer = await asyncio.to_thread(_exchange, ua.local_port, bye)
    assert answer is not None and answer.startswith(b"SIP/2.0 481")
    answer = await asyncio.to_thread(_exchange, ua.local_port, _request(method="FROBNICATE"))
    assert answer is not None and answer.startswith(b"SIP/2.0 501")


async def test_truncated_and_oversized_datagrams(ua):
    # A request cut short after its start line lacks its mandatory headers: 400.
    answer = await asyncio.to_thread(_exchange, ua.local_port, _request()[:60])
    assert answer is None or answer.startswith(b"SIP/2.0 400")
    # A large but legal datagram (60 KB of header) is still served.
    big = _request(extra="X-Padding: " + "a" * 60000 + "\r\n")
    answer = await asyncio.to_thread(_exchange, ua.local_port, big)
    assert answer is not None and answer.startswith(b"SIP/2.0 200")


async def test_tcp_garbage_closes_only_that_connection(ua):
    port = ua.tcp.local[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"NOT SIP AT ALL\r\nfoo\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65535), 2)
    assert data == b"" or data.startswith(b"SIP/2.0 400") or data.startswith(b"")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request().replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
    await writer.drain()
    data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert data.startswith(b"SIP/2.0 200")
    writer.close()


@needs_sipp
async def test_calls_still_work_after_abuse(ua, sipp):
    for _ in range(20):
        await asyncio.to_thread(_exchange, ua.local_port, os.urandom(200), 0.01)
    peer = sipp("uas_answer.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)
