"""Behind a NAT (issue 17): the address we advertise, rport, and symmetric RTP, on loopback.

The "public" address is 127.0.0.3 (any 127/8 address is this host's, so nothing leaves
loopback): our user agent binds 127.0.0.1 and advertises 127.0.0.3 in Via, Contact and SDP;
a small UDP forwarder on 127.0.0.3 plays the NAT's inbound mapping back to 127.0.0.1.

The NATed peer of the RTP test says 127.0.0.7 in its SDP (its "private" address; a real
private one such as 10.255.255.1 would route our first packets, sent before the latch, off
this host) while its RTP comes from 127.0.0.1: we must answer to the source.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from media.engine import MediaConfig, MediaEngine
from media.rtp import RtpSender, parse_rtp
from sip import causes
from softswitch.ua import UserAgent, UserAgentConfig
from tests.conftest import media_ports, needs_sipp, wait_until

PUBLIC = "127.0.0.3"
PRIVATE = "127.0.0.7"


class _Forwarder(asyncio.DatagramProtocol):
    """The NAT's inbound mapping: what reaches ``PUBLIC:port`` goes on to ``127.0.0.1:port``
    (sent from 127.0.0.1, so the request's Via host still matches its source)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.relayed: list[bytes] = []
        self.out: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relayed.append(data)
        if self.out is not None:
            self.out.sendto(data, self.target)


@pytest.fixture
async def natted_ua() -> AsyncIterator[tuple[UserAgent, _Forwarder]]:
    media = MediaConfig(bind_host="127.0.0.1", advertised_host=PUBLIC, **media_ports())
    agent = UserAgent(
        UserAgentConfig(
            host="127.0.0.1", port=0, public_host=PUBLIC, transports=("udp",), media=media
        )
    )
    await agent.start()
    loop = asyncio.get_running_loop()
    forwarder = _Forwarder(("127.0.0.1", agent.sip.local_port))
    inbound, _ = await loop.create_datagram_endpoint(
        lambda: forwarder, local_addr=(PUBLIC, agent.sip.local_port)
    )
    out, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    forwarder.out = out  # type: ignore[assignment]
    yield agent, forwarder
    inbound.close()
    out.close()
    await agent.close()


@needs_sipp
@pytest.mark.peer
async def test_advertised_address_in_via_contact_and_sdp_and_the_callees_bye_comes_back(
    natted_ua, sipp
):
    """sipp checks the INVITE's Via sent-by (with rport), Contact, o= and c= all say
    127.0.0.3, answers (to the INVITE's source: rport), and sends its BYE to the Contact's
    address, which reaches us through the forwarder; the call ends as the callee's."""
    ua, forwarder = natted_ua
    peer = sipp("uas_advertised.xml")
    call = await ua.dial(peer.uri, from_user="1000", codecs=["PCMU"])
    if not await asyncio.wait_for(call.wait_answered(), 10):
        await asyncio.to_thread(peer.assert_ok, 5)  # sipp's reason first
        raise AssertionError(call.terminated)
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert (end.cause, end.hangup_source) == (causes.NORMAL_CLEARING, "callee")
    assert any(data.startswith(b"BYE ") for data in forwarder.relayed)
    await asyncio.to_thread(peer.assert_ok)


def _sdp(host: str, port: int) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=ptime:20\r\n"
    )


def _udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    out = []
    for _ in range(10000):
        try:
            out.append(sock.recvfrom(2048))
        except BlockingIOError:
            break
    return out


async def test_natted_peer_with_a_private_sdp_address_gets_our_rtp_at_its_source() -> None:
    """The peer's SDP names its private address; its RTP comes from elsewhere (its NAT's
    public side). The first packet latches (RFC 4961 symmetric RTP): from then on our RTP
    goes to that source, from the port we receive on, and nothing more to the SDP address."""
    engine = MediaEngine(MediaConfig(bind_host="127.0.0.1", **media_ports()))
    engine.start()
    private, public = _udp(PRIVATE), _udp("127.0.0.1")
    try:
        stream = engine.create_stream()
        stream.create_offer()
        stream.apply_answer(_sdp(PRIVATE, private.getsockname()[1]))
        assert stream.remote_address == private.getsockname()
        ours = ("127.0.0.1", stream.local_port)
        sender = RtpSender(ssrc=0x5EED)
        got: list[tuple[bytes, tuple[str, int]]] = []
        for _ in range(100):  # bounded: 100 packets, 2 s
            public.sendto(sender.packet(0, b"\xff" * 160), ours)
            sender.advance(160)
            await asyncio.sleep(0.02)
            got += _drain(public)
            if len(got) >= 5:
                break
        assert len(got) >= 5, "no RTP came back to the peer's source"
        assert stream.remote_address == public.getsockname()
        assert all(source == ours for _, source in got)  # symmetric: sent from our RTP port
        assert all(parse_rtp(data).payload_type == 0 for data, _ in got)
        before = len(_drain(private))  # what went to the SDP address before the latch
        await wait_until(lambda: len(_drain(public)) > 0, 2)
        assert _drain(private) == []
        stats = stream.stats()
        assert stats["rtp_dropped_strays"] == 0 and stats["packets_received"] >= 1
        print(f"packets to the SDP address before the latch: {before}")
    finally:
        private.close()
        public.close()
        await engine.stop()
