"""The Plivo v1 API end to end: the official SDK → softswitch (real SIP user agent) → sipp.

Each sipp peer is a UAS on its own loopback port; a real HTTP receiver checks every
callback and its V3 signature (see ``test_api_plivo.Receiver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from softswitch.server import Server
from tests.test_api_plivo import Receiver, make_config, point_sdk_at, sdk_client, sig_ok

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]

# A callee that rings and never answers; it takes the CANCEL (RFC 3261 §9.2: 200 to the
# CANCEL, 487 to the INVITE).
RING_FOREVER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="ring forever">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""

BUSY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="busy">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sipp:
    """One sipp UAS process on a loopback port, with its message trace."""

    def __init__(self, workdir: Path, scenario: str | None = None, calls: int = 1) -> None:
        self.port = _free_udp_port()
        self.workdir = workdir
        self.trace = workdir / f"sipp_{self.port}_messages.log"
        args = ["sipp", "-i", "127.0.0.1", "-p", str(self.port), "-m", str(calls), "-nostdin",
                "-timeout", "30", "-trace_msg", "-message_file", str(self.trace)]
        if scenario is None:
            args[1:1] = ["-sn", "uas"]
        else:
            path = workdir / f"scenario_{self.port}.xml"
            path.write_text(scenario)
            args[1:1] = ["-sf", str(path)]
        self.proc = subprocess.Popen(args, cwd=workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def uri(self) -> str:
        return f"sip:callee@127.0.0.1:{self.port}"

    def messages(self) -> str:
        return self.trace.read_text(errors="replace") if self.trace.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Any]:
    started: list[Sipp] = []

    def start(scenario: str | None = None, calls: int = 1) -> Sipp:
        peer = Sipp(tmp_path, scenario, calls)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def sdk_base(monkeypatch: pytest.MonkeyPatch) -> Any:
    return lambda base_url: point_sdk_at(monkeypatch, base_url)


@pytest.fixture
async def real(tmp_path: Path, sdk_base: Any) -> AsyncIterator[Any]:
    try:
        import sip.aio.ua  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the UA is built in parallel
        pytest.skip(f"SIP user agent not available: {exc}")
    cfg = make_config(tmp_path, rtp_port_min=40000, rtp_port_max=40999)
    server = Server(cfg)
    await server.start()
    sdk_base(server.base_url)
    await asyncio.sleep(0.2)  # sipp peers bind meanwhile
    try:
        yield server, sdk_client(server.base_url)
    finally:
        await server.stop(mode="hangup", drain_timeout_s=2.0)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


def sdk(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, *args, **kwargs)


async def test_sdk_call_to_sipp_with_callbacks(real: Any, sipps: Any, receiver: Receiver) -> None:
    server, client = real
    peer = sipps()
    resp = await sdk(client.calls.create, from_="+14155550100", to_=peer.uri,
                     answer_url=receiver.url("/answer"), ring_url=receiver.url("/ring"),
                     hangup_url=receiver.url("/hangup"), caller_name="Alice Example",
                     sip_headers="Foo=bar,Acct=42", time_limit=1)
    assert resp.message == "call fired"
    hang = await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=10)
    call_uuid = hang.params["CallUUID"]
    ring = receiver.events(call_uuid, "/ring")
    answer = receiver.events(call_uuid, "/answer")
    assert len(ring) == 1 and ring[0].params["CallStatus"] == "ringing"
    assert len(answer) == 1 and answer[0].params["Event"] == "StartApp"
    p = hang.params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("completed", "ALLOTTED_TIMEOUT", "Plivo")
    assert int(p["BillDuration"]) >= 1 and p["AnswerTime"]
    assert p["X-PH-Foo"] == "bar"
    sig_ok(receiver)
    rec = await sdk(client.calls.get, call_uuid)
    assert rec.call_status == "completed" and rec.to_number == peer.uri
    await asyncio.to_thread(peer.proc.wait, 10)
    trace = peer.messages()
    assert "X-PH-Foo: bar" in trace and "X-PH-Acct: 42" in trace
    assert '"Alice Example"' in trace and "+14155550100" in trace
    assert "BYE sip:" in trace


async def test_bulk_call_to_three_sipp_peers_live_and_delete(real: Any, sipps: Any, receiver: Receiver) -> None:
    server, client = real
    peers = [sipps() for _ in range(3)]
    resp = await sdk(client.calls.create, from_="1000", to_="<".join(p.uri for p in peers),
                     answer_url=receiver.url("/answer"), hangup_url=receiver.url("/hangup"))
    assert isinstance(resp.request_uuid, list) and len(resp.request_uuid) == 3
    answers = await receiver.wait_for(lambda h: h.path == "/answer" and len(receiver.events(path="/answer")) >= 3,
                                      timeout=10)
    uuids = {h.params["CallUUID"] for h in answers}
    assert len(uuids) == 3
    live = await sdk(client.live_calls.list_ids)
    assert uuids <= set(live.calls)
    for uid in uuids:
        one = await sdk(client.live_calls.get, uid)
        assert one.call_status == "in-progress"
        await sdk(client.calls.delete, uid)
    for req in resp.request_uuid:
        p = (await receiver.wait_hangup(request_uuid=req, timeout=10)).params
        assert p["CallStatus"] == "completed" and p["HangupSource"] == "API Request"
    assert sorted(h.params["To"] for h in receiver.events(path="/hangup")) == sorted(p.uri for p in peers)
    sig_ok(receiver)


async def test_busy_ring_timeout_and_cancel_against_sipp(real: Any, sipps: Any, receiver: Receiver) -> None:
    server, client = real
    busy = sipps(BUSY)
    ringer = sipps(RING_FOREVER)
    ringer2 = sipps(RING_FOREVER)
    common = {"from_": "1000", "answer_url": receiver.url("/answer"), "hangup_url": receiver.url("/hangup"),
              "ring_url": receiver.url("/ring")}
    b = await sdk(client.calls.create, to_=busy.uri, **common)
    r = await sdk(client.calls.create, to_=ringer.uri, ring_timeout=1, **common)
    c = await sdk(client.calls.create, to_=ringer2.uri, **common)
    p = (await receiver.wait_hangup(request_uuid=b.request_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("busy", "USER_BUSY", "Callee")
    p = (await receiver.wait_hangup(request_uuid=r.request_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"]) == ("no-answer", "NO_ANSWER")
    await receiver.wait_for(lambda h: h.path == "/ring" and h.params["RequestUUID"] == c.request_uuid, timeout=10)
    await sdk(client.calls.cancel, c.request_uuid)
    p = (await receiver.wait_hangup(request_uuid=c.request_uuid, timeout=10)).params
    assert (p["CallStatus"], p["HangupCause"], p["HangupSource"]) == ("cancel", "ORIGINATOR_CANCEL", "API Request")
    assert not receiver.events(path="/answer")
    for peer in (ringer, ringer2):
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(peer.proc.wait, 5)
        assert "CANCEL sip:" in peer.messages()
    sig_ok(receiver)
