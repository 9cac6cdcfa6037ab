"""RTP/RTCP: header round trip, sequence wrap, RFC 3550 loss and jitter with explicit times."""

from __future__ import annotations

import struct

from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from media.rtp import (
    ReceiveStatistics,
    RtcpSession,
    RtpSender,
    is_rtcp,
    ntp_time,
    parse_rtp,
)


def test_header_round_trip() -> None:
    sender = RtpSender(ssrc=0x11223344, sequence_number=7, timestamp=1000)
    data = sender.packet(0, b"\xff" * 160, marker=True)
    header = parse_rtp(data)
    assert header is not None
    assert header.payload_type == 0 and header.marker
    assert (header.sequence_number, header.timestamp, header.ssrc) == (7, 1000, 0x11223344)
    assert header.payload == b"\xff" * 160
    assert sender.sequence_number == 8 and sender.packets_sent == 1 and sender.octets_sent == 160


@given(
    pt=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
)
def test_fast_header_agrees_with_aiortc(
    pt: int, marker: bool, seq: int, ts: int, ssrc: int, payload: bytes
) -> None:
    ours = RtpSender(ssrc=ssrc, sequence_number=seq, timestamp=ts).packet(
        pt, payload, marker=marker
    )
    theirs = RtpPacket(
        payload_type=pt,
        marker=int(marker),
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=payload,
    ).serialize()
    assert ours == theirs
    parsed = RtpPacket.parse(ours)
    header = parse_rtp(ours)
    assert header is not None
    assert (
        header.payload_type,
        header.marker,
        header.sequence_number,
        header.timestamp,
        header.ssrc,
        header.payload,
    ) == (
        parsed.payload_type,
        bool(parsed.marker),
        parsed.sequence_number,
        parsed.timestamp,
        parsed.ssrc,
        parsed.payload,
    )


def test_parse_csrc_extension_and_padding() -> None:
    # V=2, P=1, X=1, CC=2; then 2 CSRCs, a one-word extension, payload, 3 padding octets.
    b0 = 0x80 | 0x20 | 0x10 | 2
    data = struct.pack("!BBHII", b0, 8, 1, 2, 3) + struct.pack("!II", 9, 10)
    data += struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4 + b"abc" + b"\x00\x00\x03"
    header = parse_rtp(data)
    assert header is not None and header.payload == b"abc" and header.payload_type == 8


def test_parse_rejects_garbage() -> None:
    assert parse_rtp(b"") is None
    assert parse_rtp(b"\x00" * 12) is None  # version 0
    assert parse_rtp(struct.pack("!BBHII", 0x8F, 0, 0, 0, 0)) is None  # 15 CSRCs missing
    assert parse_rtp(struct.pack("!BBHII", 0xA0, 0, 0, 0, 0) + b"\x10") is None  # padding


def test_sequence_and_timestamp_wrap() -> None:
    sender = RtpSender(sequence_number=0xFFFE, timestamp=0xFFFFFF00)
    seqs = [parse_rtp(sender.packet(0, b"")).sequence_number for _ in range(4)]
    assert seqs == [0xFFFE, 0xFFFF, 0, 1]
    sender.advance(0x200)
    assert sender.timestamp == 0x100


def test_random_starts() -> None:
    a, b = RtpSender(), RtpSender()
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)


def feed(
    stats: ReceiveStatistics,
    seqs: list[int],
    *,
    start: float = 0.0,
    arrivals: list[float] | None = None,
) -> None:
    for i, seq in enumerate(seqs):
        arrival = arrivals[i] if arrivals else start + 0.02 * i
        stats.update(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, arrival)


def test_receive_stats_no_loss_across_wrap() -> None:
    stats = ReceiveStatistics()
    feed(stats, list(range(65530, 65546)))
    # A.1 probation: the first packet is not counted; the source is valid from the second.
    assert stats.received == 15 and stats.expected == 15 and stats.lost == 0
    assert stats.cycles == 1 << 16
    assert stats.extended_max == 65545
    assert stats.jitter == 0.0


def test_receive_stats_loss_and_fraction() -> None:
    stats = ReceiveStatistics()
    seqs = [s for s in range(100, 200) if s % 10 != 5]  # every tenth packet lost
    feed(stats, seqs)
    assert stats.expected == 99 and stats.lost == 10
    assert stats.fraction_lost() == (10 << 8) // 99
    # The next interval has no loss: the fraction is per interval (A.3).
    feed(stats, list(range(200, 220)))
    assert stats.fraction_lost() == 0
    assert stats.lost == 10


def test_receive_stats_duplicates_and_reordering() -> None:
    stats = ReceiveStatistics()
    feed(stats, [1, 2, 3, 5, 4, 6, 6])
    assert stats.extended_max == 6
    assert stats.lost == -1  # a duplicate counts as received: RFC 3550 A.3 allows negative


def test_receive_stats_source_restart() -> None:
    stats = ReceiveStatistics()
    feed(stats, list(range(10, 20)))
    # A jump of more than MAX_DROPOUT: the first packet is dropped, the second confirms.
    assert stats.update(40000, 0, 1.0) is False
    assert stats.update(40001, 160, 1.02) is True
    assert stats.base_seq == 40001 and stats.lost == 0


def test_jitter_with_synthetic_arrivals() -> None:
    stats = ReceiveStatistics()
    # Packets every 20 ms of media, arrivals alternating 10 ms early/late: |D| = 20 ms = 160.
    arrivals = [0.02 * i + (0.01 if i % 2 else -0.01) for i in range(400)]
    feed(stats, list(range(400)), arrivals=arrivals)
    assert abs(stats.jitter - 160) < 1.0
    assert abs(stats.jitter_ms - 20.0) < 0.2


def test_reset_on_ssrc_change() -> None:
    stats = ReceiveStatistics()
    feed(stats, list(range(10)))
    stats.reset(1234)
    assert stats.ssrc == 1234 and stats.received == 0 and stats.packets == 0


def test_rtcp_sr_rr_and_rtt() -> None:
    # Two sessions, A and B, exchanging RTP and RTCP with a 50 ms one-way delay.
    a_tx, b_tx = RtpSender(), RtpSender()
    a_rx, b_rx = ReceiveStatistics(), ReceiveStatistics()
    a = RtcpSession(a_tx, a_rx, cname="a")
    b = RtcpSession(b_tx, b_rx, cname="b")
    wall = 1_700_000_000.0
    for i in range(10):
        a_tx.packet(0, b"x" * 160)
        b_rx.ssrc = a_tx.ssrc
        b_rx.update(i, i * 160, 0.02 * i)
    report = a.build_report(now=1.0, wall=wall)
    assert is_rtcp(report)
    parsed = RtcpPacket.parse(report)
    assert isinstance(parsed[0], RtcpSrPacket) and isinstance(parsed[1], RtcpSdesPacket)
    assert parsed[0].sender_info.packet_count == 10
    assert parsed[0].sender_info.ntp_timestamp == ntp_time(wall)
    b.handle(report, wall + 0.05)
    # B has not sent RTP: an RR with a block about A, LSR from A's SR, DLSR = 1 s.
    rr = b.build_report(now=2.0, wall=wall + 1.05)
    parsed = RtcpPacket.parse(rr)
    assert isinstance(parsed[0], RtcpRrPacket)
    block = parsed[0].reports[0]
    assert block.ssrc == a_tx.ssrc and block.dlsr == 65536 and block.lsr != 0
    a.handle(rr, wall + 1.10)
    assert a.rtt is not None and abs(a.rtt - 0.10) < 0.001
    assert a.remote_fraction_lost == 0 and a.reports_received == 1


def test_rtcp_schedule_and_bye() -> None:
    session = RtcpSession(RtpSender(), ReceiveStatistics(), interval=5.0)
    assert not session.due(100.0)
    session.schedule(100.0)
    assert not session.due(102.4) and session.due(107.6)
    report = session.build_report(108.0, 1e9, bye=True)
    other = RtcpSession(RtpSender(), ReceiveStatistics())
    other.handle(report, 1e9)
    assert other.bye_received
    other.handle(b"\x80\xc9\x00\x05garbage", 1e9)  # malformed: ignored


def test_is_rtcp() -> None:
    assert not is_rtcp(RtpSender().packet(0, b""))
    assert not is_rtcp(RtpSender().packet(101, b"", marker=True))
    assert is_rtcp(bytes(RtcpRrPacket(ssrc=1)))
