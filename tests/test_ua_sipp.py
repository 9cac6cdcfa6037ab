"""The user agent against real sipp UAS scenarios over loopback (issue 2's list)."""

from __future__ import annotations

import asyncio

import pytest

from sip import causes
from softswitch.events import Answered, EarlyMedia, Ringing, Terminated
from softswitch.ua import Credentials, GatewayConfig, UserAgent, UserAgentConfig
from tests.conftest import free_port, needs_sipp, wait_bound, wait_until

pytestmark = [needs_sipp, pytest.mark.peer]


@pytest.fixture
async def ua():
    agent = UserAgent(UserAgentConfig(host="127.0.0.1", port=0))
    await agent.start()
    yield agent
    await agent.close()


async def _events(call) -> list:
    return [e async for e in call.events()]


async def test_answer_and_hangup(ua, sipp):
    peer = sipp("uas_answer.xml")
    call = await ua.dial(peer.uri, from_user="1000", caller_name="Alice Example")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    assert call.media is not None and call.sip_status == 200
    await asyncio.sleep(0.3)
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 5)
    assert end.cause == causes.NORMAL_CLEARING and end.hangup_source == "caller"
    kinds = [type(e) for e in await _events(call)]
    assert Ringing in kinds and kinds.index(Ringing) < kinds.index(Answered) < kinds.index(Terminated)
    await asyncio.to_thread(peer.assert_ok)


async def test_busy(ua, sipp):
    peer = sipp("uas_busy.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert not await call.wait_answered()
    assert (end.cause, end.sip_status, end.hangup_source) == (causes.USER_BUSY, 486, "callee")
    await asyncio.to_thread(peer.assert_ok)


async def test_ring_timeout_cancels(ua, sipp):
    peer = sipp("uas_ring_cancel.xml")
    call = await ua.dial(peer.uri, from_user="1000", ring_timeout=1.0)
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert end.cause == causes.NO_ANSWER and end.hangup_source == "timeout"
    assert end.sip_status == 487
    await asyncio.to_thread(peer.assert_ok)


async def test_caller_cancel_while_ringing(ua, sipp):
    peer = sipp("uas_ring_cancel.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    async for event in call.events():
        if isinstance(event, Ringing):
            break
    await call.hangup()
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert end.cause == causes.ORIGINATOR_CANCEL and end.sip_status == 487
    await asyncio.to_thread(peer.assert_ok)


async def test_early_media_then_answer(ua, sipp):
    peer = sipp("uas_early_media.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    events = await asyncio.wait_for(_until(call, Answered), 5)
    assert any(isinstance(e, EarlyMedia) and e.status == 183 for e in events)
    assert call.early_at is not None and call.early_at < call.answered_at
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)


async def _until(call, kind) -> list:
    out = []
    async for e in call.events():
        out.append(e)
        if isinstance(e, kind):
            break
    return out


@pytest.mark.parametrize("scenario", ["uas_auth_401.xml", "uas_auth_407.xml"])
async def test_digest_challenge(ua, sipp, scenario):
    peer = sipp(scenario)
    call = await ua.dial(peer.uri, from_user="alice", credentials=Credentials("alice", "secret"))
    assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
    # sipp's scenario sends the BYE itself once it has verified the credentials.
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert end.hangup_source == "callee"
    await asyncio.to_thread(peer.assert_ok)


async def test_digest_wrong_password_is_rejected(ua, sipp):
    peer = sipp("uas_auth_401.xml")
    call = await ua.dial(peer.uri, from_user="alice", credentials=Credentials("alice", "wrong"))
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert end.sip_status == 403 and end.cause == causes.CALL_REJECTED
    await asyncio.to_thread(peer.assert_ok)


async def test_no_credentials_for_challenge(ua, sipp):
    peer = sipp("uas_auth_401.xml", extra=["-timeout", "5s"])
    call = await ua.dial(peer.uri, from_user="alice")
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert end.sip_status == 401 and end.cause == causes.CALL_REJECTED
    peer.stop()


async def test_forked_ringing_first_2xx_wins(ua, sipp):
    peer = sipp("uas_fork.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    tags = {e.to_tag for e in await _until(call, Answered) if isinstance(e, Ringing)}
    assert tags == {"forkA", "forkB"}
    assert call.session.dialog is not None and call.session.dialog.remote_tag == "forkB"
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)


async def test_callee_hangs_up_first(ua, sipp):
    peer = sipp("uas_callee_bye.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    end = await asyncio.wait_for(call.wait_terminated(), 10)
    assert call.answered_at is not None
    assert end.cause == causes.NORMAL_CLEARING and end.hangup_source == "callee"
    assert 0.8 < call.duration < 3
    await asyncio.to_thread(peer.assert_ok)


async def test_first_invite_lost_retransmission_wins(ua, sipp):
    # The first INVITE is lost on the way (silently: no ICMP error comes back, which would
    # fail the attempt at once); only our Timer A retransmission (at T1 = 500 ms) gets
    # through a relay in front of sipp.
    peer = sipp("uas_answer.xml")
    loop = asyncio.get_running_loop()
    relay, _ = await loop.create_datagram_endpoint(
        lambda: _DropFirst(("127.0.0.1", peer.port)), local_addr=("127.0.0.1", 0)
    )
    try:
        port = relay.get_extra_info("sockname")[1]
        call = await ua.dial(f"sip:service@127.0.0.1:{port}", from_user="1000")
        assert await asyncio.wait_for(call.wait_answered(), 10)
        assert relay.get_protocol().dropped == 1
        await call.hangup()
        await asyncio.to_thread(peer.assert_ok)
    finally:
        relay.close()


class _DropFirst(asyncio.DatagramProtocol):
    """A lossy path in front of ``upstream``: loses the first datagram, relays the rest
    (and the upstream's answers back to the sender)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.client: tuple[str, int] | None = None
        self.dropped = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        assert self.transport is not None
        if (addr[0], addr[1]) == self.upstream:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = (addr[0], addr[1])
        if not self.dropped:
            self.dropped += 1
            return
        self.transport.sendto(data, self.upstream)


async def test_tcp(ua, sipp):
    peer = sipp("uas_answer.xml", transport="t1")
    call = await ua.dial(peer.uri, from_user="1000", transport="tcp")
    assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
    assert call.transport == "tcp"
    await call.hangup()
    await asyncio.wait_for(call.wait_terminated(), 5)
    await asyncio.to_thread(peer.assert_ok)


async def test_reinvite_from_callee_hold(ua, sipp):
    peer = sipp("uas_reinvite.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    # sipp re-INVITEs (sendonly) after 0.5 s; we answer recvonly
    await wait_until(lambda: call.stats()["direction"] == "recvonly", 5, what="on hold")
    assert call.terminated is None
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)


async def test_reliable_provisional_prack(ua, sipp):
    peer = sipp("uas_100rel.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)


async def test_session_timer_refresh(ua, sipp):
    peer = sipp("uas_session_timer.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    await asyncio.sleep(3.0)  # refresh due at 2 s
    assert call.terminated is None
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)


async def test_redirect_is_followed(ua, sipp):
    final = sipp("uas_answer.xml")
    redirector = sipp("uas_redirect.xml", extra=["-set", "target_port", str(final.port)])
    call = await ua.dial(redirector.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
    await call.hangup()
    await asyncio.to_thread(redirector.assert_ok)
    await asyncio.to_thread(final.assert_ok)


async def test_number_through_gateway(sipp):
    peer = sipp("uas_answer.xml")
    gw = GatewayConfig(name="trunk", host="127.0.0.1", port=peer.port, prefix=["1", "44"], strip=0)
    async with UserAgent(UserAgentConfig(port=0, gateways=[gw])) as agent:
        call = await agent.dial("+14155550100", from_user="+12025550000")
        assert call.session.invite.uri.startswith("sip:14155550100@127.0.0.1:")
        assert await asyncio.wait_for(call.wait_answered(), 10)
        await call.hangup()
    await asyncio.to_thread(peer.assert_ok)


async def test_unreachable_destination_times_out(ua):
    # A socket that never answers (and, being bound, draws no ICMP error): Timer B
    # (64*T1) ends it; shorten T1 for the test. (A closed port fails at once instead:
    # tests/test_sip_transport_failures.py.)
    import socket

    agent = UserAgent(UserAgentConfig(port=0, t1=0.05))
    await agent.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        try:
            call = await agent.dial(f"sip:nobody@127.0.0.1:{blackhole.getsockname()[1]}", from_user="1000")
            end = await asyncio.wait_for(call.wait_terminated(), 10)
            assert end.cause == causes.RECOVERY_ON_TIMER_EXPIRE and end.sip_status == 408
        finally:
            await agent.close()


async def test_bad_targets_raise(ua):
    with pytest.raises(ValueError):
        await ua.dial("not a target", from_user="1000")
    with pytest.raises(LookupError):
        await ua.dial("+14155550100", from_user="1000")  # no gateway configured


async def test_rfc3263_srv_lookup_and_failover(sipp):
    """A real DNS server on loopback: NAPTR -> SRV (two targets by priority) -> A. The first
    target answers 503, so the call fails over to the second (RFC 3263 §4.3)."""
    from tests.peers.dns_server import start_dns

    busy = sipp("uas_503.xml")
    good = sipp("uas_answer.xml")
    zone = {
        ("trunk.test", "NAPTR"): ['10 50 "s" "SIP+D2U" "" _sip._udp.trunk.test.'],
        ("_sip._udp.trunk.test", "SRV"): [f"10 0 {busy.port} a.trunk.test.", f"20 0 {good.port} b.trunk.test."],
        ("a.trunk.test", "A"): ["127.0.0.1"],
        ("b.trunk.test", "A"): ["127.0.0.1"],
    }
    server, transport, resolver = await start_dns(zone)
    try:
        config = UserAgentConfig(port=0, dns_servers=["127.0.0.1"], dns_port=resolver.port)
        async with UserAgent(config) as agent:
            call = await agent.dial("sip:bob@trunk.test", from_user="1000")
            assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
            await call.hangup()
        assert ("trunk.test", "NAPTR") in server.queries and ("_sip._udp.trunk.test", "SRV") in server.queries
    finally:
        transport.close()
    await asyncio.to_thread(busy.assert_ok)
    await asyncio.to_thread(good.assert_ok)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_call_with_media(tmp_path):
    import subprocess

    from media.engine import MediaConfig
    port, media_port = free_port(), free_port(pair=True)
    proc = subprocess.Popen(["sipp", "-sn", "uas", "-i", "::1", "-p", str(port), "-m", "1", "-nostdin",
                             "-timeout", "15s", "-mi", "::1", "-mp", str(media_port), "-rtp_echo"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        await asyncio.to_thread(wait_bound, port, proc=proc)
        config = UserAgentConfig(host="::1", port=0, media=MediaConfig(bind_host="::1"))
        async with UserAgent(config) as agent:
            call = await agent.dial(f"sip:bob@[::1]:{port}", from_user="1000")
            assert await asyncio.wait_for(call.wait_answered(), 10), call.terminated
            assert "[::1]" in call.session.invite.get("Via") and "[::1]" in call.session.invite.get("From")
            await wait_until(lambda: call.stats()["packets_received"] > 0, 5, what="echoed RTP")
            assert call.stats()["packets_received"] > 0  # sipp echoed our RTP over IPv6
            await call.hangup()
            assert (await call.wait_terminated()).cause == causes.NORMAL_CLEARING
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_reinvite_without_sdp_gets_our_offer(ua, sipp):
    peer = sipp("uas_reinvite_delayed.xml")
    call = await ua.dial(peer.uri, from_user="1000")
    assert await asyncio.wait_for(call.wait_answered(), 10)
    await asyncio.sleep(1.5)  # sipp re-INVITEs without SDP; we offer in the 200; it answers in the ACK
    assert call.terminated is None
    await call.hangup()
    await asyncio.to_thread(peer.assert_ok)
