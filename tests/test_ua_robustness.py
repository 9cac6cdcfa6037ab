"""Bad input never stops the user agent: malformed requests get 400 with the reason,
malformed responses are dropped, and calls still work afterwards."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import needs_sipp
from tests.peers import plivo_api
from tests.peers.plivo_api import kill9, sdk, sdk_client, serve_subprocess

receiver = plivo_api.receiver
sdk_base = plivo_api.sdk_base


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


# --- hypothesis-driven datagrams at a running server ------------------------------------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
_unicode = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
#: Mutations that make any request malformed (RFC 3261 §8.2: 400); the Via stays intact, so
#: the answer can be addressed.
_MALFORMING = ("drop Call-ID", "drop CSeq", "drop From", "drop To", "CSeq not a number",
               "Content-Length too large", "Content-Length not a number", "CSeq method mismatch")
#: Mutations after which the request may be anything (or unaddressable): any answer will do,
#: as long as the server answers sanely and lives.
_WILD = ("drop Via", "truncate", "garbage", "unicode header", "header without colon",
         "huge header", "odd version", "folded line", "duplicate CSeq", "NUL byte")


@dataclass
class _Datagram:
    data: bytes
    is_request: bool  #: False: still a response, which must not be answered
    must_400: bool


@st.composite
def _datagrams(draw: st.DrawFn, port: int) -> _Datagram:
    """A structurally plausible SIP request or response towards the server, with a few
    mutations; whether a request must be answered 400."""
    call_id = f"fuzz-{draw(_token)}@127.0.0.1"
    branch = f"z9hG4bK-fuzz{draw(_token)}"
    is_request = draw(st.integers(0, 3)) > 0
    method = draw(st.sampled_from(["OPTIONS", "INVITE", "BYE", "CANCEL", "ACK", "INFO", "UPDATE",
                                   "REGISTER", "MESSAGE", "SUBSCRIBE", "PRACK"]) | _token.map(str.upper))
    seq = draw(st.integers(0, 2**31 - 1))
    body = draw(st.sampled_from([b"", b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n", b"hello"]))
    if is_request:
        to_tag = draw(st.sampled_from(["", ";tag=" + draw(_token)]))
        start = f"{method} sip:softswitch@127.0.0.1:{port} SIP/2.0"
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{{port}};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{draw(_token)}@127.0.0.1>;tag={draw(_token)}"),
            ("To", f"<sip:softswitch@127.0.0.1>{to_tag}"),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} {method}"),
        ]
    else:
        status = draw(st.integers(100, 699))
        start = f"SIP/2.0 {status} {draw(_token)}"
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch={branch}"),
            ("From", f"<sip:softswitch@127.0.0.1>;tag={draw(_token)}"),
            ("To", f"<sip:{draw(_token)}@127.0.0.1>;tag={draw(_token)}"),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} {method}"),
        ]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    length = str(len(body))
    mutations = draw(st.lists(st.sampled_from(_MALFORMING + _WILD), max_size=3, unique=True))
    for mutation in mutations:
        if mutation.startswith("drop "):
            headers = [(n, v) for n, v in headers if n != mutation[5:]]
        elif mutation == "CSeq not a number":
            headers = [(n, f"x{seq} {method}" if n == "CSeq" else v) for n, v in headers]
        elif mutation == "CSeq method mismatch":
            headers = [(n, f"{seq} NOT{method}" if n == "CSeq" else v) for n, v in headers]
        elif mutation == "duplicate CSeq":
            headers.append(("CSeq", f"{seq + 1} {method}"))
        elif mutation == "Content-Length too large":
            length = str(len(body) + draw(st.integers(1, 10**6)))
        elif mutation == "Content-Length not a number":
            length = draw(st.sampled_from(["-1", "abc", "1e3", "", "99999999999999999999999"]))
        elif mutation == "unicode header":
            headers.append((f"X-{draw(_token)}", draw(_unicode)))
        elif mutation == "huge header":
            headers.append(("X-Huge", "a" * draw(st.integers(1000, 60000))))
        elif mutation == "header without colon":
            headers.append((draw(_token), ""))
        elif mutation == "folded line":
            headers.append(("Subject", "a\r\n folded"))
        elif mutation == "odd version":
            start = start.replace("SIP/2.0", draw(st.sampled_from(["SIP/3.0", "SIP/2", "HTTP/1.1", ""])), 1)
    lines = [start] + [f"{n}: {v}" if v or n.startswith("X-") else n for n, v in headers]
    data = ("\r\n".join(lines) + f"\r\nContent-Length: {length}\r\n\r\n").encode() + body
    if "garbage" in mutations:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=40)) + data[at:]
    if "NUL byte" in mutations:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\x00" + data[at:]
    if "truncate" in mutations:
        data = data[: draw(st.integers(0, len(data)))]
    must_400 = is_request and any(m in _MALFORMING for m in mutations) and not any(m in _WILD for m in mutations)
    # A response whose status line the mutations broke is no response any more: it may be
    # answered (400) like any malformed request.
    is_response = not is_request and re.match(rb"SIP/2\.0 \d{3} ", data) is not None
    return _Datagram(data, not is_response, must_400)


def _send_one(server_port: int, datagram: _Datagram) -> bytes | None:
    """Send one datagram from a fresh socket (so that a late answer is never taken for the
    next one's) and read the first answer, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        data = datagram.data.replace(b"{port}", str(s.getsockname()[1]).encode())
        s.settimeout(0.2 if datagram.is_request else 0.03)
        s.sendto(data, ("127.0.0.1", server_port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


@needs_sipp
async def test_hypothesis_datagrams_at_a_running_server(sipp, tmp_path, sdk_base, receiver):
    """``softswitch serve`` (its own process) takes 300 generated datagrams on its SIP port:
    it stays up, answers every malformed request it answers with 400, never answers a
    response, never says 500, and places a call afterwards. Bounded: 300 examples, < 20 s."""
    # The per-source limit on out-of-dialog answers (on by default) would drop most of
    # the datagrams a single fuzzing source sends: the parser is what is under test here,
    # so the server allows far more than the fuzzer's rate.
    config = tmp_path / "fuzz.toml"
    config.write_text("sip_out_of_dialog_rate = 10000.0\nsip_out_of_dialog_burst = 10000\n")
    proc, base, sip_port = await serve_subprocess(tmp_path, tmp_path / "fuzz.db", "--config", str(config))
    sdk_base(base)
    seen = {"requests": 0, "answered": 0, "must_400": 0, "answered_400": 0}
    try:
        port_holder = sip_port

        @settings(max_examples=300, deadline=None, database=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            datagram = data.draw(_datagrams(port_holder))
            answer = _send_one(port_holder, datagram)
            assert proc.poll() is None, "the server died"
            if not datagram.is_request:
                assert answer is None, f"a response was answered: {answer[:80]!r}"
                return
            seen["requests"] += 1
            seen["must_400"] += datagram.must_400
            if answer is None:
                return  # unaddressable, or an ACK; rate limiting may drop some too
            seen["answered"] += 1
            # the status line only: a 400 echoes what it can of a request without a Call-ID
            status_line = answer.split(b"\r\n", 1)[0]
            assert re.fullmatch(rb"SIP/2\.0 [1-6]\d\d .*", status_line), answer[:200]
            status = int(status_line[8:11])
            assert status != 500, answer[:200]
            if datagram.must_400:
                assert status == 400, (datagram.data[:300], answer[:200])
                seen["answered_400"] += 1

        started = time.monotonic()
        await asyncio.to_thread(fuzz)
        elapsed = time.monotonic() - started
        assert elapsed < 20, f"the fuzz run took {elapsed:.1f} s"
        assert seen["answered_400"] > 0 and seen["answered"] > seen["requests"] // 3, seen
        assert proc.poll() is None
        # still in service: OPTIONS, then a call through the HTTP API to a real callee
        answer = await asyncio.to_thread(_exchange, sip_port, _request())
        assert answer is not None and answer.startswith(b"SIP/2.0 200")
        peer = sipp("uas_callee_bye.xml")
        c = sdk_client(base)
        resp = await sdk(c.calls.create, from_="1000", to_=peer.uri, answer_url=receiver.url("/answer"),
                         hangup_url=receiver.url("/hangup"))
        hang = await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=15)
        assert hang.params["CallStatus"] == "completed" and hang.params["HangupSource"] == "Callee"
        await asyncio.to_thread(peer.assert_ok)
    finally:
        await kill9(proc)
