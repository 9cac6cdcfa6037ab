"""G.711 against an independent implementation written from the standard's tables.

The reference below does not reuse the module's code or tables: it walks the segment tables of
ITU-T G.711 (Table 1 for A-law, Table 2 for µ-law: segment start, step, 16 intervals each) one
sample at a time in plain Python, with the G.191 STL conventions for the 16-bit input
(µ-law sees x >> 2, A-law sees x >> 3, negatives folded with the one's complement).

Python 3.11's deprecated ``audioop`` is a second reference where present. Findings, checked
by ``test_audioop_*`` below:
* ``lin2alaw``/``alaw2lin`` and ``ulaw2lin`` agree with G.191 on all inputs;
* ``lin2ulaw`` differs on 508 negative inputs (by one interval): audioop folds negative µ-law
  samples with two's-complement negation (-x) where G.191 uses the one's complement (~x),
  moving the negative decision thresholds by one 16-bit LSB of the 14-bit value.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest

from media import g711

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python >= 3.13
        audioop = None

# ---------------------------------------------------------------------------------------------
# Reference from the standard's tables.
# A-law, Table 1/G.711 in units of the 12-bit magnitude (0..4096): segment starts and steps.
A_SEG_START = [0, 32, 64, 128, 256, 512, 1024, 2048]
A_SEG_STEP = [2, 2, 4, 8, 16, 32, 64, 128]
# µ-law, Table 2/G.711 in units of the 13-bit magnitude (0..8159). The first interval of
# segment 0 is [0, 1) (value 0); the others are two units wide, so segment 0 "starts" at -1.
U_SEG_START = [-1, 31, 95, 223, 479, 991, 2015, 4063]
U_SEG_STEP = [2, 4, 8, 16, 32, 64, 128, 256]
U_MAX = 8159


def ref_alaw_encode(x: int) -> int:
    mag = (x if x >= 0 else -x - 1) >> 3  # 12-bit magnitude, one's complement fold
    for seg in range(7, -1, -1):
        if mag >= A_SEG_START[seg]:
            interval = (mag - A_SEG_START[seg]) // A_SEG_STEP[seg]
            break
    code = (seg << 4) | interval
    if x >= 0:
        code |= 0x80
    return code ^ 0x55  # even-bit inversion


def ref_alaw_decode(code: int) -> int:
    c = code ^ 0x55
    seg, interval = (c >> 4) & 7, c & 15
    value = A_SEG_START[seg] + A_SEG_STEP[seg] * interval + A_SEG_STEP[seg] // 2
    value *= 8  # back to 16-bit scale
    return value if c & 0x80 else -value


def ref_ulaw_encode(x: int) -> int:
    mag = (x if x >= 0 else -x - 1) >> 2  # 13-bit magnitude
    mag = min(mag, U_MAX - 1)
    for seg in range(7, -1, -1):
        if mag >= U_SEG_START[seg]:
            interval = (mag - U_SEG_START[seg]) // U_SEG_STEP[seg]
            break
    code = 0x7F - ((seg << 4) | interval)  # all magnitude bits inverted
    return code | 0x80 if x >= 0 else code


def ref_ulaw_decode(code: int) -> int:
    c = code & 0x7F
    seg_interval = 0x7F - c
    seg, interval = seg_interval >> 4, seg_interval & 15
    value = U_SEG_START[seg] + U_SEG_STEP[seg] * interval + U_SEG_STEP[seg] // 2
    value *= 4
    return value if code & 0x80 else -value


ALL = np.arange(-32768, 32768, dtype=np.int16)


# ---------------------------------------------------------------------------------------------
def test_ulaw_encode_all_inputs_match_reference() -> None:
    got = np.frombuffer(g711.ulaw_encode(ALL), dtype=np.uint8)
    want = np.array([ref_ulaw_encode(int(x)) for x in ALL], dtype=np.uint8)
    assert np.array_equal(got, want)


def test_alaw_encode_all_inputs_match_reference() -> None:
    got = np.frombuffer(g711.alaw_encode(ALL), dtype=np.uint8)
    want = np.array([ref_alaw_encode(int(x)) for x in ALL], dtype=np.uint8)
    assert np.array_equal(got, want)


def test_decode_tables_match_reference() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tolist() == [ref_ulaw_decode(c) for c in range(256)]
    assert g711.alaw_decode(codes).tolist() == [ref_alaw_decode(c) for c in range(256)]


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (0x00, -32124),
        (0x80, 32124),
        (0x7F, 0),
        (0xFF, 0),
        (0x7E, -8),
        (0xFE, 8),
        (0x70, -120),
        (0xF0, 120),
        (0x6F, -132),
        (0x0F, -16764),
        (0x8F, 16764),
    ],
)
def test_ulaw_known_points(code: int, value: int) -> None:
    assert int(g711.ulaw_decode(bytes([code]))[0]) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (0xD5, 8),
        (0x55, -8),
        (0xAA, 32256),
        (0x2A, -32256),
        (0xD4, 24),
        (0xC5, 264),
        (0xA5, 16896),
        (0x80, 5504),
    ],
)
def test_alaw_known_points(code: int, value: int) -> None:
    assert int(g711.alaw_decode(bytes([code]))[0]) == value


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [
        (0, 0xFF, 0xD5),
        (-1, 0x7F, 0x55),
        (1, 0xFF, 0xD5),
        (32767, 0x80, 0xAA),
        (-32768, 0x00, 0x2A),
        (8, 0xFE, 0xD5),
        (1000, 0xCE, 0xFA),
        (-1000, 0x4E, 0x7A),
    ],
)
def test_encode_known_points(sample: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16)
    assert g711.ulaw_encode(pcm) == bytes([ulaw])
    assert g711.alaw_encode(pcm) == bytes([alaw])


def test_round_trip_is_idempotent() -> None:
    # Decoding yields the interval mid-point, which must re-encode to the same character.
    codes = bytes(range(256))
    # µ-law's "negative zero" 0x7F decodes to 0, which re-encodes as positive zero 0xFF.
    expected = bytes(0xFF if c == 0x7F else c for c in codes)
    assert g711.ulaw_encode(g711.ulaw_decode(codes)) == expected
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def test_quantisation_error_bounded() -> None:
    # A-law: |error| <= half a step (16-bit scale: segment 7 step 128*8 = 1024 -> 512 + fold).
    back = g711.alaw_decode(g711.alaw_encode(ALL)).astype(np.int32)
    assert np.max(np.abs(back - ALL.astype(np.int32))) <= 520
    back = g711.ulaw_decode(g711.ulaw_encode(ALL)).astype(np.int32)
    # µ-law clips beyond ±32635 (biased magnitude 0x1FFF); below that, half of the top step.
    inside = np.abs(ALL.astype(np.int32)) < 32124
    assert np.max(np.abs(back - ALL.astype(np.int32))[inside]) <= 516


def test_registries_and_dtypes() -> None:
    assert g711.ENCODERS["PCMU"] is g711.ulaw_encode
    assert g711.DECODERS["PCMA"] is g711.alaw_decode
    out = g711.ulaw_decode(b"\x00\x80")
    assert out.dtype == np.int16 and out.flags.writeable
    # Non-int16 input is clipped, not wrapped.
    assert g711.ulaw_encode(np.array([40000, -40000])) == bytes([0x80, 0x00])
    assert g711.alaw_encode(np.array([0.4, -0.6])) == bytes([0xD5, 0x55])
    # 2-D input works (row-major).
    frames = np.zeros((2, 160), dtype=np.int16)
    assert g711.ulaw_encode(frames) == b"\xff" * 320


@pytest.mark.skipif(audioop is None, reason="audioop removed in Python 3.13")
def test_audioop_alaw_agrees_everywhere() -> None:
    pcm = ALL.tobytes()
    assert audioop.lin2alaw(pcm, 2) == g711.alaw_encode(ALL)
    codes = bytes(range(256))
    assert audioop.alaw2lin(codes, 2) == g711.alaw_decode(codes).tobytes()
    assert audioop.ulaw2lin(codes, 2) == g711.ulaw_decode(codes).tobytes()


@pytest.mark.skipif(audioop is None, reason="audioop removed in Python 3.13")
def test_audioop_ulaw_differs_only_by_negative_fold() -> None:
    ours = np.frombuffer(g711.ulaw_encode(ALL), dtype=np.uint8).astype(np.int32)
    theirs = np.frombuffer(audioop.lin2ulaw(ALL.tobytes(), 2), dtype=np.uint8).astype(np.int32)
    diff = np.nonzero(ours != theirs)[0]
    assert len(diff) == 508
    assert np.all(ALL[diff] < 0)
    assert np.all(np.abs(ours[diff] - theirs[diff]) == 1)
    # audioop takes the magnitude of a negative sample as -(x >> 2) == (~x >> 2) + 1, so
    # its answer for x + 4 (one 14-bit step up) is G.191's answer for x.
    x = ALL.astype(np.int32)
    below = x <= -5
    shifted = (x[below] + 4).astype(np.int16)
    theirs_shifted = np.frombuffer(audioop.lin2ulaw(shifted.tobytes(), 2), dtype=np.uint8)
    assert np.array_equal(ours[below], theirs_shifted.astype(np.int32))


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_sox_decodes_like_us(tmp_path) -> None:
    """sox's G.711 decoders agree on all 256 characters. (Its encoders are not references:
    sox quantises from 32-bit with rounding, so it differs from G.191 on ~500 µ-law and ~1000
    A-law inputs near decision thresholds, positive and negative; not tested.)"""
    codes = bytes(range(256))
    for law, ext in (("PCMU", "ul"), ("PCMA", "al")):
        src, dst = tmp_path / f"codes.{ext}", tmp_path / f"{ext}.s16"
        src.write_bytes(codes)
        subprocess.run(
            ["sox", "-D", "-t", ext, "-r", "8000", "-c", "1", str(src), "-t", "s16", str(dst)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        pcm = np.frombuffer(dst.read_bytes(), dtype="<i2")
        assert np.array_equal(pcm, g711.DECODERS[law](codes)), law
