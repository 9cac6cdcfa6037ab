"""SDP (RFC 4566): the session description, its parser and its serialiser.

Why our own parser: aiortc's SDP parser is written for WebRTC. It drops static payload
types that come without an ``a=rtpmap`` line (RFC 3551 §6 lets a PBX send ``m=audio 4000
RTP/AVP 0 8`` and nothing else) and it ignores ``a=ptime``. PBXs and phones send exactly
that, so this module parses the lines itself and keeps every attribute it does not
understand, so that ``str()`` writes back what matters.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


class SdpError(ValueError):
    """Malformed SDP, or an offer/answer that leaves no usable audio stream."""


# RFC 3551 §6 table 4: static audio payload types. G.722's RTP clock rate is 8000 although it
# samples at 16 kHz (RFC 3551 §4.5.2), so it is listed with 8000 here, as peers write it.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}

# RFC 4566 §6 direction attributes (their meaning in offer/answer: RFC 3264 §6.1).
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass
class Codec:
    """One payload type of an m-line: ``a=rtpmap`` (RFC 4566 §6) or a static type."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    def matches(self, other: Codec) -> bool:
        """Same codec irrespective of payload type number (RFC 3264 §6.1 matches by encoding)."""
        return (
            self.name.upper() == other.name.upper()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )


@dataclass
class Origin:
    """The ``o=`` line (RFC 4566 §5.2)."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class MediaDescription:
    """One ``m=`` section. ``connection`` and ``direction`` are the effective values
    (media level, else session level, else the RFC 3264 §5.1 default ``sendrecv``)."""

    media: str
    port: int
    proto: str
    formats: list[int]
    codecs: list[Codec]
    connection: str | None = None
    direction: str = "sendrecv"
    ptime: int | None = None
    rtcp_port: int | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    maxptime: int | None = None
    rtcp_address: str | None = None
    raw_formats: list[str] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    """Media-level ``i=``, ``b=``, ``k=`` lines, kept verbatim."""

    def codec(self, payload_type: int) -> Codec | None:
        """The codec a payload type number stands for in this m-line."""
        for codec in self.codecs:
            if codec.payload_type == payload_type:
                return codec
        return None

    @property
    def telephone_event(self) -> Codec | None:
        """The RFC 4733 telephone-event codec at 8000 Hz, if listed."""
        return self.telephone_event_at(8000)

    def telephone_event_at(self, clock_rate: int) -> Codec | None:
        """The RFC 4733 telephone-event codec at ``clock_rate`` (48000 next to Opus), if listed."""
        for codec in self.codecs:
            if codec.name.upper() == "TELEPHONE-EVENT" and codec.clock_rate == clock_rate:
                return codec
        return None

    @property
    def on_hold_address(self) -> bool:
        """RFC 3264 §8.4 / RFC 2543: ``c=0.0.0.0`` (or ``::``) means "do not send to me"."""
        return self.connection in ("0.0.0.0", "::")

    def __str__(self) -> str:
        fmts = (
            " ".join(self.raw_formats)
            if self.raw_formats
            else " ".join(str(f) for f in self.formats)
        )
        lines = [f"m={self.media} {self.port} {self.proto} {fmts}".rstrip()]
        # RFC 4566 §5 order inside a media section: i=, c=, b=, k=, a=.
        lines += [ln for ln in self.other_lines if ln.startswith("i=")]
        if self.connection is not None:
            lines.append(f"c=IN {address_type(self.connection)} {self.connection}")
        lines += [ln for ln in self.other_lines if not ln.startswith("i=")]
        for name, value in self.attributes:
            lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        return "\r\n".join(lines) + "\r\n"


@dataclass
class SessionDescription:
    """A parsed SDP body. Unknown lines are kept (``other_lines``) so ``str()`` round-trips
    what matters."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    direction: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Parse an SDP body (RFC 4566 §5). Accepts CRLF or bare LF line endings
        (RFC 4566 §5: "a parser SHOULD be tolerant and also accept records terminated
        with a single newline character") and ignores blank lines.

        Raises :class:`SdpError` on malformed mandatory lines (``v=``, ``o=``, ``c=``, ``m=``).
        """
        if len(text) > 65536:
            raise SdpError("SDP body too large")
        sdp = cls()
        current: MediaDescription | None = None
        rtpmaps: dict[int, tuple[str, int, int]] = {}
        fmtps: dict[int, str] = {}
        seen_version = False
        for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"line {number}: not a type=value line: {line!r}")
            kind, value = line[0], line[2:]
            try:
                if kind == "v":
                    sdp.version = int(value)
                    seen_version = True
                elif kind == "o":
                    sdp.origin = _parse_origin(value)
                elif kind == "s" and current is None:
                    sdp.session_name = value
                elif kind == "t" and current is None:
                    sdp.timing = value
                elif kind == "c":
                    address = _parse_connection(value)
                    if current is None:
                        sdp.connection = address
                    else:
                        current.connection = address
                elif kind == "m":
                    if current is not None:
                        _finish_media(current, rtpmaps, fmtps)
                    current = _parse_media_line(value)
                    rtpmaps, fmtps = {}, {}
                    sdp.media.append(current)
                elif kind == "a":
                    name, _, attr_value = value.partition(":")
                    attr: tuple[str, str | None] = (name, attr_value if ":" in value else None)
                    if current is None:
                        if name in DIRECTIONS:
                            sdp.direction = name
                        sdp.attributes.append(attr)
                    else:
                        _media_attribute(current, attr, rtpmaps, fmtps)
                else:
                    # i=, u=, e=, p=, b=, z=, k=, r=: kept verbatim, no effect on audio.
                    if current is None:
                        sdp.other_lines.append(line)
                    else:
                        current.other_lines.append(line)
            except (ValueError, IndexError) as exc:
                if isinstance(exc, SdpError):
                    raise
                raise SdpError(f"line {number}: malformed {kind}= line: {line!r}") from exc
        if current is not None:
            _finish_media(current, rtpmaps, fmtps)
        if not seen_version:
            raise SdpError("missing v= line")
        for media in sdp.media:
            if media.connection is None:
                media.connection = sdp.connection
            if media.direction == "":
                media.direction = sdp.direction or "sendrecv"
        return sdp

    def __str__(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        lines += [ln for ln in self.other_lines if not ln.startswith("b=")]
        if self.connection is not None:
            lines.append(f"c=IN {address_type(self.connection)} {self.connection}")
        lines += [ln for ln in self.other_lines if ln.startswith("b=")]
        lines.append(f"t={self.timing}")
        for name, value in self.attributes:
            lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        body = "\r\n".join(lines) + "\r\n"
        for media in self.media:
            text = str(media)
            # Same-as-session connection lines are not repeated.
            if self.connection is not None and media.connection == self.connection:
                text = text.replace(
                    f"c=IN {address_type(self.connection)} {self.connection}\r\n", "", 1
                )
            body += text
        return body

    def first_audio(self) -> tuple[int, MediaDescription]:
        """Index and description of the first audio m-line with a non-zero port."""
        for index, media in enumerate(self.media):
            if media.media == "audio" and media.port != 0:
                return index, media
        raise SdpError("no active audio stream in SDP")


# --- parsing helpers -------------------------------------------------------------------


def address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"o= needs 6 fields: {value!r}")
    return Origin(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4], parts[5])


def _parse_connection(value: str) -> str:
    # RFC 4566 §5.7: c=<nettype> <addrtype> <connection-address>; multicast may add /ttl.
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"unsupported c= line: {value!r}")
    address = parts[2].split("/", 1)[0]
    if parts[1] == "IP6":
        ipaddress.IPv6Address(address)  # ValueError -> SdpError by the caller
    return address


def _parse_media_line(value: str) -> MediaDescription:
    # RFC 4566 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m= line too short: {value!r}")
    port = int(parts[1].split("/", 1)[0])
    if not 0 <= port <= 65535:
        raise SdpError(f"m= port out of range: {port}")
    raw = parts[3:]
    formats = [int(f) for f in raw if f.isdigit()] if "RTP/" in parts[2] else []
    return MediaDescription(
        media=parts[0],
        port=port,
        proto=parts[2],
        formats=formats,
        codecs=[],
        direction="",
        raw_formats=raw,
    )


def _media_attribute(
    media: MediaDescription,
    attr: tuple[str, str | None],
    rtpmaps: dict[int, tuple[str, int, int]],
    fmtps: dict[int, str],
) -> None:
    name, value = attr
    media.attributes.append(attr)
    if name in DIRECTIONS:
        media.direction = name
    elif name == "rtpmap" and value:
        # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
        pt, _, encoding = value.partition(" ")
        enc = encoding.strip().split("/")
        rtpmaps[int(pt)] = (enc[0], int(enc[1]), int(enc[2]) if len(enc) > 2 and enc[2] else 1)
    elif name == "fmtp" and value:
        pt, _, params = value.partition(" ")
        if pt.isdigit():
            fmtps[int(pt)] = params.strip()
    elif name == "ptime" and value:
        media.ptime = int(float(value))
    elif name == "maxptime" and value:
        media.maxptime = int(float(value))
    elif name == "rtcp" and value:
        # RFC 3605: a=rtcp:<port> [IN IP4 <address>]
        parts = value.split()
        media.rtcp_port = int(parts[0])
        if len(parts) == 4:
            media.rtcp_address = parts[3]


def _finish_media(
    media: MediaDescription, rtpmaps: dict[int, tuple[str, int, int]], fmtps: dict[int, str]
) -> None:
    for pt in media.formats:
        if pt in rtpmaps:
            name, rate, channels = rtpmaps[pt]
        elif pt in STATIC_PAYLOAD_TYPES:
            name, rate, channels = STATIC_PAYLOAD_TYPES[pt]
        else:
            continue  # dynamic type without rtpmap: unusable, skipped (RFC 4566 §6)
        media.codecs.append(Codec(pt, name, rate, channels, fmtps.get(pt)))
