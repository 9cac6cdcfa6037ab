"""ITU-T G.711 µ-law (PCMU) and A-law (PCMA) with numpy lookup tables.

Bit-exact with the ITU-T reference implementation (G.191 Software Tool Library, ``g711.c``):

* The linear signal is 16-bit two's complement. µ-law looks at the 14 most significant bits
  (``x >> 2``), A-law at the 13 most significant bits (``x >> 3``; the first two A-law segments
  share one step, so the reference code shifts by 4 and keeps one mantissa bit less).
* Negative samples are folded with the one's complement (``~x``), not negation, so the
  decision thresholds sit symmetrically about -0.5: ``-1`` encodes like ``0`` with the sign
  bit cleared. This is where the Sun/CCITT ``g711.c`` lineage (Python's ``audioop``) differs
  on a few negative inputs; see ``tests/unit/test_g711.py``.
* µ-law adds the bias 33 (the offset between the A-law and µ-law thresholds, G.711 Table 2),
  clips the biased magnitude to 0x1FFF and inverts all bits of the character (``^ 0xFF`` in
  effect: positive samples carry sign bit 1). A-law inverts the even bits (``^ 0x55``).
* Decoding returns the mid-point of each quantisation interval, left-justified to 16 bits:
  µ-law spans ±32124, A-law ±32256.

Encoding is one fancy-indexing pass through a 65 536-entry ``uint8`` table indexed by the
samples reinterpreted as ``uint16``; decoding one pass through a 256-entry ``int16`` table.
Both tables are computed once at import from the G.191 algorithm, vectorised.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "DECODERS",
    "ENCODERS",
    "ALAW_DECODE_TABLE",
    "ALAW_ENCODE_TABLE",
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]


def _segment_of(values: np.ndarray, first_edge: int) -> np.ndarray:
    """Segment number 0..7 of non-negative ``values``: segment s starts at ``first_edge << (s-1)``."""
    seg = np.zeros(values.shape, dtype=np.int32)
    for s in range(1, 8):
        seg += values >= (first_edge << (s - 1))
    return seg


def _build_ulaw_encode() -> np.ndarray:
    # Table index i is the int16 sample whose bit pattern, read as uint16, equals i.
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    # G.191 ulaw_compress: 14-bit magnitude (one's complement for negatives) plus bias 33.
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    # Biased magnitude in [64 << (k-1), 64 << k) lies in segment k (k = 0..7).
    seg = _segment_of(absno, 64)
    mantissa = (absno >> (seg + 1)) & 0x0F
    code = ((7 - seg) << 4) | (0x0F - mantissa)
    code = np.where(x >= 0, code | 0x80, code)
    return code.astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    code = np.arange(256, dtype=np.int32)
    inv = ~code & 0xFF
    exponent = (inv >> 4) & 0x07
    mantissa = inv & 0x0F
    step = 4 << (exponent + 1)
    # G.191 ulaw_expand: leading one, mantissa steps, half a step, minus the bias (4 * 33).
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return np.where(code < 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    x = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    # G.191 alaw_compress: 0 <= ix < 2048 (one's complement for negatives).
    ix = np.where(x < 0, (~x) >> 4, x >> 4)
    # ix in [16 << (k-1), 16 << k) lies in segment k >= 1; segment 0 is ix < 16.
    seg = _segment_of(ix, 16)
    mantissa = np.where(seg == 0, ix, (ix >> np.maximum(seg - 1, 0)) - 16)
    code = (seg << 4) | mantissa
    code = np.where(x >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    code = np.arange(256, dtype=np.int32)
    ix = (code ^ 0x55) & 0x7F
    exponent = ix >> 4
    mantissa = ix & 0x0F
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    # Left-justify and add half a quantisation step, then scale by the exponent.
    mantissa = (mantissa << 4) + 0x08
    magnitude = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    return np.where(code > 127, magnitude, -magnitude).astype(np.int16)


ULAW_ENCODE_TABLE: np.ndarray = _build_ulaw_encode()
ULAW_DECODE_TABLE: np.ndarray = _build_ulaw_decode()
ALAW_ENCODE_TABLE: np.ndarray = _build_alaw_encode()
ALAW_DECODE_TABLE: np.ndarray = _build_alaw_decode()
for _table in (ULAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ALAW_ENCODE_TABLE, ALAW_DECODE_TABLE):
    _table.setflags(write=False)


def _as_uint16(pcm: np.ndarray) -> np.ndarray:
    """Samples as a uint16 view of int16; other dtypes are rounded and clipped to int16 first."""
    if type(pcm) is np.ndarray and pcm.dtype == np.int16 and pcm.flags.c_contiguous:
        return pcm.view(np.uint16)  # the media clock's case: no copies, no checks
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.rint(arr)
        arr = np.clip(arr, -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(arr).view(np.uint16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encode 16-bit linear PCM as G.711 µ-law (PCMU, RTP payload type 0, RFC 3551 §4.5.14)."""
    return ULAW_ENCODE_TABLE[_as_uint16(pcm)].tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """Decode G.711 µ-law bytes to int16 PCM (a new, writable array)."""
    return ULAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: np.ndarray) -> bytes:
    """Encode 16-bit linear PCM as G.711 A-law (PCMA, RTP payload type 8, RFC 3551 §4.5.14)."""
    return ALAW_ENCODE_TABLE[_as_uint16(pcm)].tobytes()


def alaw_decode(data: bytes) -> np.ndarray:
    """Decode G.711 A-law bytes to int16 PCM (a new, writable array)."""
    return ALAW_DECODE_TABLE[np.frombuffer(data, dtype=np.uint8)]


ENCODERS: dict[str, Callable[[np.ndarray], bytes]] = {"PCMU": ulaw_encode, "PCMA": alaw_encode}
DECODERS: dict[str, Callable[[bytes], np.ndarray]] = {"PCMU": ulaw_decode, "PCMA": alaw_decode}
