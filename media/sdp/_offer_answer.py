"""The offer/answer model (RFC 3264) for plain RTP/AVP audio, on parsed SDP.

The few offer/answer rules a softswitch needs:

* we offer (outbound INVITE): :func:`build_offer`, then :func:`negotiate_answer` on the 183/200;
* the far end offers (re-INVITE for hold, resume, codec change): :func:`answer_offer`.

Directions are handled per RFC 3264 §6.1 and hold per §8.4, including the old RFC 2543 style
of hold, ``c=IN IP4 0.0.0.0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._description import (
    DIRECTIONS,
    Codec,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    address_type,
)

# The payload types we use when *we* write an offer. Dynamic numbers are the ones most
# PBXs use (Asterisk and FreeSWITCH both put telephone-event on 101).
_OFFER_CODECS: dict[str, tuple[int, int, int, str | None]] = {
    # name: (payload type, clock rate, channels, fmtp)
    "PCMU": (0, 8000, 1, None),
    "PCMA": (8, 8000, 1, None),
    "G722": (9, 8000, 1, None),
    "G729": (18, 8000, 1, "annexb=no"),
    "CN": (13, 8000, 1, None),
    # RFC 7587 §4, §6.1: always opus/48000/2; the engine hears and sends 8 kHz audio, so the
    # peer may encode narrowband (maxplaybackrate) and should expect no more from us.
    "OPUS": (111, 48000, 2, "useinbandfec=1; maxplaybackrate=8000; sprop-maxcapturerate=8000"),
}
TELEPHONE_EVENT_PT = 101
# RFC 4733 §2.1: the events' clock should be the audio's; next to Opus that is 48000, offered
# on its own payload type besides the 8000 one (peers that know only 8000 answer with that).
TELEPHONE_EVENT_48K_PT = 102
# RFC 4733 §7.1.1: the events for DTMF digits 0-9 * # A-D are 0-15; 16 is flash.
TELEPHONE_EVENT_FMTP = "0-16"

# Direction as (we send, we receive) bits and back.
_BITS = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_FROM_BITS = {bits: name for name, bits in _BITS.items()}

# Names that never carry audio: they ride along with the audio codec.
_AUXILIARY = {"TELEPHONE-EVENT", "CN"}


@dataclass
class NegotiatedMedia:
    """What the media stream needs after one offer/answer exchange."""

    remote_address: str
    remote_port: int
    codec: Codec
    dtmf_payload_type: int | None
    ptime: int
    direction: str
    """Our direction after negotiation: ``sendrecv``, ``sendonly``, ``recvonly`` or ``inactive``."""
    dtmf_clock_rate: int = 8000
    """The clock of the telephone-event we send (``dtmf_payload_type``): 48000 when the
    answer paired Opus with telephone-event/48000."""
    remote_rtcp_port: int | None = None
    remote_rtcp_address: str | None = None
    receive_codecs: dict[int, Codec] = field(default_factory=dict)
    """Every payload type the far end may send us (RFC 3264 §5.1: any type we listed)."""
    receive_dtmf_payload_types: frozenset[int] = frozenset()
    cn_payload_type: int | None = None
    """13 when both sides listed comfort noise (RFC 3389)."""

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


# --- offer/answer ----------------------------------------------------------------------


def _offer_codec(name: str) -> Codec:
    key = name.upper()
    if key not in _OFFER_CODECS:
        raise ValueError(f"cannot offer codec {name!r}; known: {sorted(_OFFER_CODECS)}")
    pt, rate, channels, fmtp = _OFFER_CODECS[key]
    return Codec(pt, "opus" if key == "OPUS" else key, rate, channels, fmtp)


def _audio_lines(
    address: str, port: int, codecs: list[Codec], ptime: int, direction: str
) -> MediaDescription:
    attributes: list[tuple[str, str | None]] = []
    for codec in codecs:
        rtpmap = f"{codec.payload_type} {codec.name}/{codec.clock_rate}"
        if codec.channels != 1:
            rtpmap += f"/{codec.channels}"
        attributes.append(("rtpmap", rtpmap))
        if codec.fmtp:
            attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    attributes.append(("ptime", str(ptime)))
    attributes.append((direction, None))
    return MediaDescription(
        media="audio",
        port=port,
        proto="RTP/AVP",
        formats=[c.payload_type for c in codecs],
        codecs=codecs,
        connection=address,
        direction=direction,
        ptime=ptime,
        attributes=attributes,
    )


def _session(
    address: str, session_id: int, version: int, media: list[MediaDescription]
) -> SessionDescription:
    return SessionDescription(
        origin=Origin("softswitch", session_id, version, "IN", address_type(address), address),
        session_name="softswitch",
        connection=address,
        media=media,
    )


def build_offer(
    *,
    address: str,
    port: int,
    codecs: list[str] | None = None,
    telephone_event: bool = True,
    ptime: int = 20,
    direction: str = "sendrecv",
    session_id: int,
    version: int,
) -> str:
    """Write our SDP offer for an outbound INVITE (RFC 3264 §5).

    ``codecs`` is in preference order; ``"CN"`` may be listed to offer RFC 3389 comfort noise.
    The telephone-event line follows RFC 4733 §7.1.1 (``a=fmtp:101 0-16``); with Opus in the
    list, telephone-event/48000 is offered too (payload type 102).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    key = (tuple(codecs or ("PCMU", "PCMA")), telephone_event, ptime, direction)
    template = _OFFER_TEMPLATES.get(key)
    if template is None:
        template = _offer_template(key)
    # The text of :func:`_build_offer_generic` for the same arguments (a property test checks
    # it byte for byte): only the origin, the address and the port change from call to call.
    formats, tail = template
    at = "IP6" if ":" in address else "IP4"
    return (
        f"v=0\r\no=softswitch {session_id} {version} IN {at} {address}\r\ns=softswitch\r\n"
        f"c=IN {at} {address}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n{tail}"
    )


#: Offer templates per (codecs, telephone_event, ptime, direction): the m-line's formats and
#: the attribute lines, which do not change from call to call. Bounded: a process offers a
#: handful of codec sets (the configured one, a gateway's, a call's).
_OFFER_TEMPLATES: dict[tuple[tuple[str, ...], bool, int, str], tuple[str, str]] = {}
_MAX_OFFER_TEMPLATES = 64


def _offered_codecs(codecs: list[str] | tuple[str, ...], telephone_event: bool) -> list[Codec]:
    offered = [_offer_codec(name) for name in (codecs or ["PCMU", "PCMA"])]
    if telephone_event:
        if any(c.clock_rate == 48000 for c in offered):
            offered.append(
                Codec(TELEPHONE_EVENT_48K_PT, "telephone-event", 48000, 1, TELEPHONE_EVENT_FMTP)
            )
        offered.append(Codec(TELEPHONE_EVENT_PT, "telephone-event", 8000, 1, TELEPHONE_EVENT_FMTP))
    return offered


def _offer_template(key: tuple[tuple[str, ...], bool, int, str]) -> tuple[str, str]:
    codecs, telephone_event, ptime, direction = key
    media = _audio_lines("", 0, _offered_codecs(codecs, telephone_event), ptime, direction)
    media.connection = None
    m_line, _, tail = str(media).partition("\r\n")
    template = (m_line.removeprefix("m=audio 0 RTP/AVP "), tail)
    if len(_OFFER_TEMPLATES) >= _MAX_OFFER_TEMPLATES:
        _OFFER_TEMPLATES.clear()
    _OFFER_TEMPLATES[key] = template
    return template


def _build_offer_generic(
    *,
    address: str,
    port: int,
    codecs: list[str] | None = None,
    telephone_event: bool = True,
    ptime: int = 20,
    direction: str = "sendrecv",
    session_id: int,
    version: int,
) -> str:
    """:func:`build_offer` through the description objects: what its template must equal."""
    if direction not in DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    media = _audio_lines(
        address, port, _offered_codecs(codecs or [], telephone_event), ptime, direction
    )
    return str(_session(address, session_id, version, [media]))


def _as_sdp(value: str | SessionDescription) -> SessionDescription:
    return value if isinstance(value, SessionDescription) else SessionDescription.parse(value)


def _effective_remote_direction(media: MediaDescription) -> str:
    """The far end's direction, with old-style hold (c=0.0.0.0) meaning "don't send to me"."""
    send, recv = _BITS.get(media.direction, (True, True))
    if media.on_hold_address:
        recv = False
    return _FROM_BITS[(send, recv)]


def _our_direction(remote: str, desired: str = "sendrecv") -> str:
    """RFC 3264 §6.1: we may send only if they receive, receive only if they send."""
    r_send, r_recv = _BITS[remote]
    d_send, d_recv = _BITS[desired]
    return _FROM_BITS[(d_send and r_recv, d_recv and r_send)]


def _telephone_event(media: MediaDescription, clock_rate: int) -> Codec | None:
    """The telephone-event to pair with audio at ``clock_rate`` (RFC 4733 §2.1: the same
    clock), else the 8000 one most peers list whatever the audio codec."""
    return media.telephone_event_at(clock_rate) or media.telephone_event


def _event_types(media: MediaDescription) -> set[int]:
    return {c.payload_type for c in media.codecs if c.name.upper() == "TELEPHONE-EVENT"}


def _remote_address(media: MediaDescription) -> str:
    if media.connection is None:
        raise SdpError("no c= line for the audio stream")
    return media.connection


def negotiate_answer(offer_we_sent: str | SessionDescription, answer: str) -> NegotiatedMedia:
    """Read the answer to our offer (RFC 3264 §7): the first codec in the answer that we
    offered is the one we send (with the answer's payload type number, §6.1).

    Raises :class:`SdpError` if the audio stream was rejected (port 0) or nothing matches.
    """
    offer = _as_sdp(offer_we_sent)
    ans = SessionDescription.parse(answer)
    index, ours = offer.first_audio()
    if index >= len(ans.media):
        raise SdpError("answer has fewer m-lines than the offer (RFC 3264 §6)")
    theirs = ans.media[index]
    if theirs.media != "audio" or theirs.port == 0:
        raise SdpError("audio stream rejected in the answer")
    chosen: Codec | None = None
    for codec in theirs.codecs:
        if codec.name.upper() in _AUXILIARY:
            continue
        if any(codec.matches(mine) for mine in ours.codecs):
            chosen = codec
            break
    if chosen is None:
        raise SdpError("no common audio codec in the answer")
    te_send = _telephone_event(theirs, chosen.clock_rate)
    if te_send is not None and ours.telephone_event_at(te_send.clock_rate) is None:
        te_send = None  # not a clock we offered
    receive: dict[int, Codec] = {}
    for mine in ours.codecs:
        if any(mine.matches(c) for c in theirs.codecs):
            receive[mine.payload_type] = mine
    for codec in theirs.codecs:  # tolerate peers that send with the answer's numbers
        receive.setdefault(codec.payload_type, codec)
    dtmf_types = _event_types(ours) | _event_types(theirs)
    cn = (
        13
        if (
            any(c.name.upper() == "CN" for c in ours.codecs)
            and any(c.name.upper() == "CN" for c in theirs.codecs)
        )
        else None
    )
    remote_dir = _effective_remote_direction(theirs)
    return NegotiatedMedia(
        remote_address=_remote_address(theirs),
        remote_port=theirs.port,
        codec=chosen,
        dtmf_payload_type=te_send.payload_type if te_send else None,
        dtmf_clock_rate=te_send.clock_rate if te_send else 8000,
        ptime=theirs.ptime or ours.ptime or 20,
        direction=_our_direction(remote_dir, ours.direction),
        remote_rtcp_port=theirs.rtcp_port if theirs.rtcp_port else theirs.port + 1,
        remote_rtcp_address=theirs.rtcp_address,
        receive_codecs=receive,
        receive_dtmf_payload_types=frozenset(dtmf_types) if _event_types(ours) else frozenset(),
        cn_payload_type=cn,
    )


def answer_offer(
    offer: str,
    *,
    address: str,
    port: int,
    supported: list[str] | None = None,
    telephone_event: bool = True,
    ptime: int = 20,
    session_id: int,
    version: int,
    hold: bool = False,
    secure: bool = False,
) -> tuple[str, NegotiatedMedia]:
    """Answer an offer from the far end (RFC 3264 §6), typically a re-INVITE.

    The first audio m-line with a codec we support is accepted, with the first codec of
    ``supported`` (our preference order, as a gateway's ``codecs`` list orders it) that the
    offer lists (§6.1 lets the answerer prefer its own order); every other m-line, video included, is rejected with port 0 and
    its formats echoed (§6: the answer has as many m-lines as the offer). ``hold=True``
    answers ``sendonly`` (or ``inactive``) to put the far end on hold from our side.
    The caller owns ``o=``: same ``session_id``, ``version`` bumped when the body changed
    (RFC 3264 §8). ``secure=True`` also accepts an RTP/SAVP m-line (SRTP, RFC 3711); the
    caller adds the ``a=crypto`` answer (:class:`media.sdp.LocalCrypto`).
    """
    sdp = SessionDescription.parse(offer)
    wanted = [_offer_codec(name) for name in (supported or ["PCMU", "PCMA"])]
    answer_media: list[MediaDescription] = []
    negotiated: NegotiatedMedia | None = None
    for media in sdp.media:
        accepted: MediaDescription | None = None
        if (
            negotiated is None
            and media.media == "audio"
            and media.port != 0
            and (
                media.proto.upper().startswith("RTP/AVP")
                or (secure and media.proto.upper().startswith("RTP/SAVP"))
            )
        ):
            chosen = next(
                (
                    c
                    for w in wanted
                    if w.name.upper() not in _AUXILIARY
                    for c in media.codecs
                    if c.matches(w)
                ),
                None,
            )
            if chosen is not None:
                codecs = [chosen]
                te = _telephone_event(media, chosen.clock_rate) if telephone_event else None
                if te is not None:
                    codecs.append(te)
                cn = next(
                    (c for c in media.codecs if c.name.upper() == "CN" and c.clock_rate == 8000),
                    None,
                )
                if not any(w.name == "CN" for w in wanted):
                    cn = None
                if cn is not None:
                    codecs.append(cn)
                remote_dir = _effective_remote_direction(media)
                ours = _our_direction(remote_dir, "sendonly" if hold else "sendrecv")
                # What we write mirrors the offer (§6.1), not the c=0.0.0.0 interpretation.
                written = _our_direction(media.direction, "sendonly" if hold else "sendrecv")
                accepted = _audio_lines(address, port, codecs, ptime, written)
                accepted.proto = media.proto
                negotiated = NegotiatedMedia(
                    remote_address=_remote_address(media),
                    remote_port=media.port,
                    codec=chosen,
                    dtmf_payload_type=te.payload_type if te else None,
                    dtmf_clock_rate=te.clock_rate if te else 8000,
                    ptime=media.ptime or 20,
                    direction=ours,
                    remote_rtcp_port=media.rtcp_port or media.port + 1,
                    remote_rtcp_address=media.rtcp_address,
                    receive_codecs={c.payload_type: c for c in codecs},
                    receive_dtmf_payload_types=frozenset({te.payload_type} if te else ()),
                    cn_payload_type=cn.payload_type if cn is not None else None,
                )
        if accepted is None:
            accepted = MediaDescription(
                media=media.media,
                port=0,
                proto=media.proto,
                formats=media.formats,
                codecs=[],
                connection=None,
                raw_formats=media.raw_formats or ["0"],
            )
        answer_media.append(accepted)
    if negotiated is None:
        raise SdpError("no acceptable audio stream in the offer")
    return str(_session(address, session_id, version, answer_media)), negotiated
