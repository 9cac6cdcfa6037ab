"""SDP parsing on bodies shaped like what real PBXs and phones send, and offer/answer rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.sdp import (
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    negotiate_answer,
)


def crlf(text: str) -> str:
    return text.strip("\n").replace("\n", "\r\n") + "\r\n"


# Asterisk chan_pjsip 200 OK.
ASTERISK = crlf("""
v=0
o=- 1565098413 1565098415 IN IP4 192.0.2.10
s=Asterisk
c=IN IP4 192.0.2.10
t=0 0
m=audio 14370 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""")

# Asterisk chan_sip: silenceSupp, no ptime.
ASTERISK_CHAN_SIP = crlf("""
v=0
o=root 1821 1822 IN IP4 192.0.2.11
s=Asterisk PBX 13.38.3
c=IN IP4 192.0.2.11
t=0 0
m=audio 17586 RTP/AVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=silenceSupp:off - - - -
a=sendrecv
""")

# FreeSWITCH with an explicit a=rtcp (RFC 3605).
FREESWITCH = crlf("""
v=0
o=FreeSWITCH 1693828640 1693828641 IN IP4 198.51.100.5
s=FreeSWITCH
c=IN IP4 198.51.100.5
t=0 0
m=audio 24680 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
a=rtcp:24691 IN IP4 198.51.100.6
""")

# Cisco CUBE: G.729 first, media-level c=, DTMF 0-15, CN on the Cisco dynamic type 19.
CISCO_CUBE = crlf("""
v=0
o=CiscoSystemsSIP-GW-UserAgent 4316 2093 IN IP4 203.0.113.1
s=SIP Call
c=IN IP4 203.0.113.1
t=0 0
m=audio 16434 RTP/AVP 18 0 101 19
c=IN IP4 203.0.113.2
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtpmap:19 CN/8000
a=ptime:20
""")

# Polycom phone: session-level direction, G.722 first, telephone-event on 127, no ptime.
POLYCOM = crlf("""
v=0
o=- 1234567890 1234567890 IN IP4 192.168.1.50
s=Polycom IP Phone
c=IN IP4 192.168.1.50
t=0 0
a=sendonly
m=audio 2222 RTP/AVP 9 0 8 18 127
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:127 telephone-event/8000
""")

# Yealink: fmtp before rtpmap, static types listed with rtpmap anyway.
YEALINK = crlf("""
v=0
o=- 20001 20001 IN IP4 192.168.1.60
s=SDP data
c=IN IP4 192.168.1.60
t=0 0
m=audio 11796 RTP/AVP 0 8 18 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:9 G722/8000
a=fmtp:101 0-15
a=rtpmap:101 telephone-event/8000
a=ptime:20
a=sendrecv
""")

# sipp's built-in uac scenario: one static type, LF line endings, no direction.
SIPP_DEFAULT = """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

# baresip: opus + G.711, RFC 4733 0-15, extra WebRTC-ish attributes, and a video line.
BARESIP = crlf("""
v=0
o=- 2890844526 2890844526 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
b=AS:128
t=0 0
a=tool:baresip 1.0.0
m=audio 10000 RTP/AVP 96 9 0 8 101
b=AS:64
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-rsize
a=ssrc:1234 cname:abcd
a=sendrecv
m=video 10002 RTP/AVP 97
a=rtpmap:97 H264/90000
a=fmtp:97 packetization-mode=0
a=sendrecv
""")

# Static payload types with no rtpmap at all (RFC 3551 allows it), IPv6.
STATIC_ONLY_IPV6 = crlf("""
v=0
o=- 1 1 IN IP6 2001:db8::1
s=-
c=IN IP6 2001:db8::1
t=0 0
m=audio 30000 RTP/AVP 0 8 9 18 13
""")

# RFC 2543-style hold: c=0.0.0.0.
OLD_HOLD = crlf("""
v=0
o=- 5 6 IN IP4 192.0.2.20
s=-
c=IN IP4 0.0.0.0
t=0 0
m=audio 4000 RTP/AVP 0 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
""")


def our_offer(**kwargs: object) -> str:
    args: dict = dict(address="127.0.0.1", port=40000, session_id=42, version=1)
    args.update(kwargs)
    return build_offer(**args)


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, address, port, first, te_pt, direction, ptime",
    [
        (ASTERISK, "192.0.2.10", 14370, "PCMU", 101, "sendrecv", 20),
        (ASTERISK_CHAN_SIP, "192.0.2.11", 17586, "PCMA", 101, "sendrecv", None),
        (FREESWITCH, "198.51.100.5", 24680, "PCMA", 101, "sendrecv", 20),
        (CISCO_CUBE, "203.0.113.2", 16434, "G729", 101, "sendrecv", 20),
        (POLYCOM, "192.168.1.50", 2222, "G722", 127, "sendonly", None),
        (YEALINK, "192.168.1.60", 11796, "PCMU", 101, "sendrecv", 20),
        (SIPP_DEFAULT, "127.0.0.1", 6000, "PCMU", None, "sendrecv", None),
        (BARESIP, "127.0.0.1", 10000, "opus", 101, "sendrecv", None),
        (STATIC_ONLY_IPV6, "2001:db8::1", 30000, "PCMU", None, "sendrecv", None),
    ],
)
def test_parse_real_world(
    text: str,
    address: str,
    port: int,
    first: str,
    te_pt: int | None,
    direction: str,
    ptime: int | None,
) -> None:
    sdp = SessionDescription.parse(text)
    _, audio = sdp.first_audio()
    assert audio.connection == address
    assert audio.port == port
    assert audio.codecs[0].name == first
    te = audio.telephone_event
    assert (te.payload_type if te else None) == te_pt
    assert audio.direction == direction
    assert audio.ptime == ptime


def test_static_types_without_rtpmap() -> None:
    audio = SessionDescription.parse(STATIC_ONLY_IPV6).media[0]
    assert [(c.payload_type, c.name, c.clock_rate) for c in audio.codecs] == [
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (9, "G722", 8000),
        (18, "G729", 8000),
        (13, "CN", 8000),
    ]


def test_fmtp_rtcp_maxptime_and_channels() -> None:
    fs = SessionDescription.parse(FREESWITCH).media[0]
    assert fs.telephone_event is not None and fs.telephone_event.fmtp == "0-16"
    assert fs.rtcp_port == 24691 and fs.rtcp_address == "198.51.100.6"
    assert SessionDescription.parse(ASTERISK).media[0].maxptime == 150
    yl = SessionDescription.parse(YEALINK).media[0]
    assert yl.telephone_event.fmtp == "0-15"  # fmtp before rtpmap still attaches
    opus = SessionDescription.parse(BARESIP).media[0].codecs[0]
    assert (opus.clock_rate, opus.channels, opus.fmtp) == (48000, 2, "stereo=1;sprop-stereo=1")


def test_lf_and_crlf_parse_the_same() -> None:
    a = SessionDescription.parse(ASTERISK)
    b = SessionDescription.parse(ASTERISK.replace("\r\n", "\n"))
    assert a == b


def test_round_trip_keeps_the_meaning() -> None:
    for text in (ASTERISK, FREESWITCH, CISCO_CUBE, POLYCOM, BARESIP, STATIC_ONLY_IPV6):
        first = SessionDescription.parse(text)
        again = SessionDescription.parse(str(first))
        assert again == first


@pytest.mark.parametrize(
    "text",
    [
        "o=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n",  # no v=
        "v=0\r\nm=audio notaport RTP/AVP 0\r\n",
        "v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\nc=IN IP4\r\n",
        "v=0\r\nc=IN IP6 not-an-address\r\n",
        "v=0\r\no=too few\r\n",
        "v=0\r\nthis is not sdp\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 101\r\na=rtpmap:101 telephone-event\r\n",
    ],
)
def test_malformed_raises_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        SessionDescription.parse(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="vocmtsa=0123456789 :/\r\nINPRTAV.-", max_size=200))
def test_parser_only_raises_sdp_error(text: str) -> None:
    try:
        SessionDescription.parse(text)
    except SdpError:
        pass


# --- our offer -------------------------------------------------------------------------


def test_build_offer_defaults() -> None:
    offer = our_offer()
    assert "m=audio 40000 RTP/AVP 0 8 101\r\n" in offer
    assert "a=fmtp:101 0-16\r\n" in offer and "a=ptime:20\r\n" in offer
    assert offer.startswith("v=0\r\no=softswitch 42 1 IN IP4 127.0.0.1\r\n")
    ipv6 = our_offer(address="::1", codecs=["PCMA"], telephone_event=False)
    assert "c=IN IP6 ::1" in ipv6 and "m=audio 40000 RTP/AVP 8\r\n" in ipv6
    with pytest.raises(ValueError):
        our_offer(codecs=["AMR"])


# --- negotiate_answer (we offered) -----------------------------------------------------


def test_negotiate_answer_asterisk() -> None:
    neg = negotiate_answer(our_offer(), ASTERISK)
    assert (neg.remote_address, neg.remote_port) == ("192.0.2.10", 14370)
    assert neg.codec.name == "PCMU" and neg.dtmf_payload_type == 101
    assert neg.direction == "sendrecv" and neg.ptime == 20 and neg.remote_rtcp_port == 14371


def test_negotiate_answer_picks_first_answered_codec_we_offered() -> None:
    neg = negotiate_answer(our_offer(), CISCO_CUBE)  # G729 not offered -> PCMU
    assert neg.codec.name == "PCMU"
    assert neg.remote_address == "203.0.113.2"  # media-level c= wins
    neg = negotiate_answer(our_offer(), FREESWITCH)
    assert neg.codec.name == "PCMA" and neg.remote_rtcp_port == 24691
    assert neg.remote_rtcp_address == "198.51.100.6"


def test_negotiate_answer_dynamic_telephone_event_number() -> None:
    answer = POLYCOM.replace("a=sendonly", "a=sendrecv")
    neg = negotiate_answer(our_offer(), answer)
    assert neg.codec.name == "PCMU"  # G722 was not offered
    assert neg.dtmf_payload_type == 127  # we send with the answer's number
    assert neg.receive_dtmf_payload_types == {101, 127}


def test_negotiate_answer_without_telephone_event() -> None:
    neg = negotiate_answer(our_offer(), SIPP_DEFAULT)
    assert neg.dtmf_payload_type is None and neg.codec.name == "PCMU"
    neg = negotiate_answer(our_offer(telephone_event=False), ASTERISK)
    assert neg.dtmf_payload_type is None and neg.receive_dtmf_payload_types == frozenset()


def test_negotiate_answer_errors() -> None:
    with pytest.raises(SdpError, match="no common"):
        negotiate_answer(our_offer(codecs=["PCMA"]), SIPP_DEFAULT)
    with pytest.raises(SdpError, match="rejected"):
        negotiate_answer(our_offer(), SIPP_DEFAULT.replace("m=audio 6000", "m=audio 0"))


@pytest.mark.parametrize(
    "answer_dir, ours",
    [
        ("sendrecv", "sendrecv"),
        ("recvonly", "sendonly"),
        ("sendonly", "recvonly"),
        ("inactive", "inactive"),
    ],
)
def test_negotiate_answer_directions(answer_dir: str, ours: str) -> None:
    neg = negotiate_answer(our_offer(), ASTERISK.replace("a=sendrecv", f"a={answer_dir}"))
    assert neg.direction == ours


def test_negotiate_answer_our_hold_offer() -> None:
    offer = our_offer(direction="sendonly")
    neg = negotiate_answer(offer, ASTERISK.replace("a=sendrecv", "a=recvonly"))
    assert neg.direction == "sendonly" and neg.sending and not neg.receiving


# --- answer_offer (they offered: re-INVITE) ---------------------------------------------


def answer(offer: str, **kwargs: object) -> tuple[SessionDescription, object]:
    args: dict = dict(address="127.0.0.1", port=40000, session_id=42, version=3)
    args.update(kwargs)
    text, neg = answer_offer(offer, **args)
    return SessionDescription.parse(text), neg


def test_answer_rejects_video_and_keeps_m_line_count() -> None:
    sdp, neg = answer(BARESIP)
    assert [(m.media, m.port) for m in sdp.media] == [("audio", 40000), ("video", 0)]
    assert sdp.media[1].formats == [97]
    audio = sdp.media[0]
    assert [c.name for c in audio.codecs] == ["PCMU", "telephone-event"]
    assert neg.codec.name == "PCMU" and neg.dtmf_payload_type == 101
    assert sdp.origin.session_id == 42 and sdp.origin.session_version == 3


def test_answer_follows_our_preference() -> None:
    """The answerer's order decides (a gateway's codec list orders it; RFC 3264 §6.1 allows
    it): the first of ours the offer lists, whatever the offer's order."""
    _, neg = answer(ASTERISK_CHAN_SIP)  # offers PCMA before PCMU
    assert neg.codec.name == "PCMU"
    _, neg = answer(ASTERISK_CHAN_SIP, supported=["PCMA", "PCMU"])
    assert neg.codec.name == "PCMA"
    _, neg = answer(ASTERISK_CHAN_SIP, supported=["PCMU"])
    assert neg.codec.name == "PCMU"


def test_answer_with_no_common_codec() -> None:
    only_g729 = CISCO_CUBE.replace("RTP/AVP 18 0 101 19", "RTP/AVP 18 101")
    with pytest.raises(SdpError):
        answer(only_g729)


@pytest.mark.parametrize(
    "offer_dir, written, ours",
    [
        ("sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "recvonly", "recvonly"),  # they put us on hold
        ("recvonly", "sendonly", "sendonly"),
        ("inactive", "inactive", "inactive"),
    ],
)
def test_answer_directions(offer_dir: str, written: str, ours: str) -> None:
    sdp, neg = answer(ASTERISK.replace("a=sendrecv", f"a={offer_dir}"))
    assert sdp.media[0].direction == written
    assert neg.direction == ours


def test_answer_session_level_direction() -> None:
    sdp, neg = answer(POLYCOM)  # a=sendonly at session level
    assert neg.direction == "recvonly" and sdp.media[0].direction == "recvonly"


def test_answer_old_style_hold_does_not_send() -> None:
    sdp, neg = answer(OLD_HOLD)
    assert neg.remote_address == "0.0.0.0"
    assert not neg.sending and neg.receiving
    assert sdp.media[0].connection == "127.0.0.1"


def test_answer_we_hold() -> None:
    sdp, neg = answer(ASTERISK, hold=True)
    assert sdp.media[0].direction == "sendonly" and neg.direction == "sendonly"


def test_answer_comfort_noise_only_when_supported() -> None:
    _, neg = answer(CISCO_CUBE)
    assert neg.cn_payload_type is None
    sdp, neg = answer(CISCO_CUBE, supported=["PCMU", "CN"])
    assert neg.cn_payload_type == 19
    assert [c.name for c in sdp.media[0].codecs] == ["PCMU", "telephone-event", "CN"]


def test_offer_answer_between_two_of_us() -> None:
    offer = our_offer(codecs=["PCMA", "PCMU"])
    text, theirs = answer_offer(
        offer, address="127.0.0.2", port=50000, supported=["PCMA", "PCMU"], session_id=7, version=1
    )
    assert theirs.codec.name == "PCMA" and (theirs.remote_port, theirs.ptime) == (40000, 20)
    ours = negotiate_answer(offer, text)
    assert ours.codec.name == "PCMA" and (ours.remote_address, ours.remote_port) == (
        "127.0.0.2",
        50000,
    )


# --- the offer template (issue 14) ----------------------------------------------------------

_CODEC_NAMES = ["PCMU", "PCMA", "G722", "G729", "CN", "OPUS", "pcmu", "opus"]


@settings(max_examples=300, deadline=None)
@given(
    codecs=st.one_of(st.none(), st.lists(st.sampled_from(_CODEC_NAMES), max_size=5)),
    telephone_event=st.booleans(),
    ptime=st.sampled_from([10, 20, 30, 40, 60]),
    direction=st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    address=st.one_of(
        st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.sampled_from(["0.0.0.0", "::"])
    ),
    port=st.integers(0, 65535),
    session_id=st.integers(0, 2**63),
    version=st.integers(0, 2**32),
)
def test_offer_template_is_byte_identical_to_the_generic_writer(
    codecs, telephone_event, ptime, direction, address, port, session_id, version
):
    from media.sdp._offer_answer import _build_offer_generic

    kw = dict(
        address=address, port=port, codecs=codecs, telephone_event=telephone_event, ptime=ptime,
        direction=direction, session_id=session_id, version=version,
    )
    # Twice: the first call may build the template, the second reads it.
    assert build_offer(**kw) == _build_offer_generic(**kw)
    assert build_offer(**kw) == _build_offer_generic(**kw)


def test_offer_template_keeps_the_errors():
    with pytest.raises(ValueError, match="bad direction"):
        build_offer(address="10.0.0.1", port=4000, direction="up", session_id=1, version=1)
    with pytest.raises(ValueError, match="cannot offer codec"):
        build_offer(address="10.0.0.1", port=4000, codecs=["XYZ"], session_id=1, version=1)
