"""The engine's settings (:class:`MediaConfig`) and the frame constants every part shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import g711 as _g711
from .. import wideband as _wideband

CLOCK_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
MAX_PLAYOUT_FRAMES = 6  # 120 ms of received audio buffered at most; older frames dropped
MAX_BRIDGE_FRAMES = 5
MAX_EVENT_SOURCES = 4  # SSRCs whose RFC 4733 events are tracked at once per stream
CN_REFRESH_TICKS = 50  # RFC 3389 §4: resend comfort noise now and then (here every second)
CN_LEVEL = 70  # -70 dBov: quiet background
# RTP source latching (the class of Asterisk CVE-2017-14099, "RTP bleed"): see _receive.py.
LEARN_WINDOW_S = 2.0  # after the first packet since an SDP, the SDP's own address may take over
RELATCH_PACKETS = 8  # consecutive in-sequence packets a new address needs to take over later
RELATCH_QUIET_S = 0.25  # ... while the current source has sent nothing for this long

SILENCE = np.zeros(FRAME_SAMPLES, dtype=np.int16)

#: Audio codecs the engine encodes and decodes, by SDP encoding name: G.711 (stateless
#: tables, :mod:`media.g711`), then G.722 and Opus (stateful per stream, :mod:`media.wideband`).
SUPPORTED_CODECS: tuple[str, ...] = tuple(_g711.ENCODERS) + tuple(_wideband.CODECS)


class UnsupportedCodec(ValueError):
    """A codec list the engine cannot offer: empty, or naming a codec it does not encode."""


def codec_list(codecs: Sequence[str]) -> list[str]:
    """``codecs`` checked and normalised: upper-case names, duplicates dropped, order kept
    (the order is the preference). Raises :class:`UnsupportedCodec` for an empty list or a
    name outside :data:`SUPPORTED_CODECS`."""
    if isinstance(codecs, str):
        raise UnsupportedCodec(f"codecs must be a list of names, not the string {codecs!r}")
    names = list(dict.fromkeys(str(c).strip().upper() for c in codecs))
    if not names:
        raise UnsupportedCodec(f"empty codec list; supported: {', '.join(SUPPORTED_CODECS)}")
    unknown = [c for c in names if c not in SUPPORTED_CODECS]
    if unknown:
        raise UnsupportedCodec(
            f"cannot encode {', '.join(unknown)}; supported: {', '.join(SUPPORTED_CODECS)}"
        )
    return names


@dataclass
class MediaConfig:
    """Media engine settings (one per process)."""

    bind_host: str = "127.0.0.1"
    """Local address the RTP sockets bind to."""
    advertised_host: str | None = None
    """Address written in SDP (c=, o=); defaults to ``bind_host``."""
    port_min: int = 16384
    port_max: int = 32767
    """RTP uses even ports and RTCP the odd one above (RFC 3550 §11)."""
    ptime_ms: int = 20
    """Packetisation time we ask for and send with (a multiple of 20)."""
    codecs: list[str] = field(default_factory=lambda: ["PCMU", "PCMA"])
    """Codecs we offer and accept, in preference order (:data:`SUPPORTED_CODECS`)."""
    telephone_event: bool = True
    """Offer/accept RFC 4733 telephone-event."""
    silence: str = "silence"
    """What to send when nothing plays: ``silence`` (encoded zeros), ``cn`` (RFC 3389
    comfort noise, if negotiated, else silence) or ``none`` (send nothing)."""
    inband_dtmf_detect: bool | str = "auto"
    """In-band (Goertzel) DTMF detection: ``"auto"`` runs it only when the peer did not
    negotiate telephone-event (as Asterisk's ``dtmfmode=rfc2833`` and FreeSWITCH do: a peer
    that offers RFC 4733 sends its digits that way, and detection costs a few µs per stream
    per tick); ``True``/``"always"`` runs it on every stream until RFC 4733 packets arrive;
    ``False`` never."""
    symmetric_rtp: bool = True
    """Send to the source address of received RTP (latch) instead of the SDP address. The
    receive side always latches (strays from other addresses are dropped, see
    :mod:`media.engine._receive`); this only decides where we send."""

    def __post_init__(self) -> None:
        if self.silence not in ("silence", "cn", "none"):
            raise ValueError(f"silence must be silence, cn or none, not {self.silence!r}")
        if self.ptime_ms <= 0 or self.ptime_ms % 20:
            raise ValueError("ptime_ms must be a positive multiple of 20")
        if self.port_max - self.port_min < 1:
            raise ValueError("port range must hold at least one RTP/RTCP pair")
        unknown = [c for c in self.codecs if c.upper() not in SUPPORTED_CODECS]
        if unknown:
            raise ValueError(f"cannot encode {unknown}; supported: {list(SUPPORTED_CODECS)}")

    @property
    def sdp_address(self) -> str:
        return self.advertised_host or self.bind_host

    @property
    def sdp_codecs(self) -> list[str]:
        return self.offer_codecs(self.codecs)

    def offer_codecs(self, codecs: Sequence[str]) -> list[str]:
        """What an m-line lists for these audio codecs: comfort noise added when the
        engine sends it (``silence="cn"``)."""
        return list(codecs) + (["CN"] if self.silence == "cn" else [])
