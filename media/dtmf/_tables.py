"""What DTMF generation and detection share: the ITU-T Q.23 keypad and frequencies, the
RFC 4733 event codes and payload layout, and dBm0 levels.

Levels are in dBm0 with the µ-law reference of ITU-T G.711: a full-scale sine (peak at the top
decision value, 8159 in 14-bit units = 32636 in 16-bit units) is +3.17 dBm0, so a 0 dBm0 sine has
a 16-bit peak of ``32636 / 10**(3.17/20)`` ≈ 22 657 (:data:`DBM0_PEAK`). The A-law reference
(+3.14 dBm0 at 32768) differs by 0.1 dB, far inside every tolerance here.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Tables

#: ITU-T Q.23 §2: low group (rows) 697/770/852/941 Hz, high group (columns) 1209/1336/1477/1633 Hz.
LOW_FREQS: tuple[float, ...] = (697.0, 770.0, 852.0, 941.0)
HIGH_FREQS: tuple[float, ...] = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
#: digit -> (low Hz, high Hz)
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    KEYPAD[r][c]: (LOW_FREQS[r], HIGH_FREQS[c]) for r in range(4) for c in range(4)
}
#: RFC 4733 §3.2 Table 7: DTMF named events 0-9, * = 10, # = 11, A-D = 12-15.
DIGIT_TO_EVENT: dict[str, int] = {
    **{str(i): i for i in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
EVENT_TO_DIGIT: dict[int, str] = {v: k for k, v in DIGIT_TO_EVENT.items()}

#: 16-bit peak amplitude of a 0 dBm0 sine (G.711 µ-law: full-scale sine is +3.17 dBm0).
DBM0_PEAK: float = 8159 * 4 / 10 ** (3.17 / 20)


def dbm0_to_amplitude(dbm0: float) -> float:
    """Peak amplitude (16-bit scale) of a sine at ``dbm0``."""
    return DBM0_PEAK * 10 ** (dbm0 / 20)


# ---------------------------------------------------------------------------------------------
# RFC 4733 telephone-event payload (§2.3)
#
#     0                   1                   2                   3
#     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#    |     event     |E|R| volume    |          duration             |
#    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """Serialise one telephone-event payload (RFC 4733 §2.3); R is sent as zero."""
    if not 0 <= event <= 255:
        raise ValueError("event must be 0..255")
    if not 0 <= volume <= 63:
        raise ValueError("volume must be 0..63 (-dBm0)")
    if not 0 <= duration <= 0xFFFF:
        raise ValueError("duration must be 0..65535 timestamp units")
    return bytes([event, (0x80 if end else 0) | volume, duration >> 8, duration & 0xFF])


def decode_event(payload: bytes) -> tuple[int, bool, int, int]:
    """Parse a telephone-event payload into ``(event, end, volume, duration)``.

    Only the first 4 bytes are read: RFC 4733 §2.5.2.3 lets one packet carry redundant
    events in later blocks, which add nothing for the digits we report.
    """
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 bytes")
    return payload[0], bool(payload[1] & 0x80), payload[1] & 0x3F, (payload[2] << 8) | payload[3]
