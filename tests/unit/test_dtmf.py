"""DTMF: send_digits grammar, Q.23 generation, RFC 4733 sender/receiver, Q.24 detection."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import g711
from media.dtmf import (
    DBM0_PEAK,
    DEFAULT_INTER_DIGIT_MS,
    DEFAULT_TONE_MS,
    DTMF_FREQUENCIES,
    DigitsError,
    DtmfDetectorBank,
    DtmfEvent,
    DtmfStep,
    InbandDtmfGenerator,
    Rfc4733Receiver,
    Rfc4733Sender,
    decode_event,
    dtmf_tone,
    encode_event,
    parse_send_digits,
    steps_duration_ms,
)

RATE = 8000
ALL_DIGITS = "0123456789*#ABCD"


# ---------------------------------------------------------------------------------------------
# Grammar


def test_plivo_examples() -> None:
    assert parse_send_digits("1w2W3") == [
        DtmfStep("1", DEFAULT_TONE_MS),
        DtmfStep(None, 500),
        DtmfStep("2", DEFAULT_TONE_MS),
        DtmfStep(None, 1000),
        DtmfStep("3", DEFAULT_TONE_MS),
    ]
    gap = DtmfStep(None, DEFAULT_INTER_DIGIT_MS)
    assert parse_send_digits("123@1000") == [
        DtmfStep("1", 1000),
        gap,
        DtmfStep("2", 1000),
        gap,
        DtmfStep("3", 1000),
    ]
    steps = parse_send_digits("wwww2410")
    assert steps[:4] == [DtmfStep(None, 500)] * 4
    assert [s.digit for s in steps[4:] if s.digit] == list("2410")


def test_lowercase_letters_and_symbols() -> None:
    steps = parse_send_digits("abcd*#", inter_digit_ms=0)
    assert [s.digit for s in steps] == list("ABCD*#")


def test_default_tone_is_configurable() -> None:
    # The legacy Plivo page's "2000" read literally as milliseconds.
    assert parse_send_digits("5", default_tone_ms=2000) == [DtmfStep("5", 2000)]
    with pytest.raises(ValueError):
        parse_send_digits("5", default_tone_ms=10)


def test_empty_and_only_suffix() -> None:
    assert parse_send_digits("") == []
    assert parse_send_digits("@300") == []


@pytest.mark.parametrize(
    ("text", "char", "position"),
    [
        ("12x4", "x", 3),
        ("1 2", " ", 2),
        ("12@300 4", " ", 7),
        ("12@3w", "w", 5),
        ("1@200@300", "@", 6),
        ("1,2", ",", 2),
        ("E", "E", 1),
        ("1２", "２", 2),
    ],
)
def test_invalid_character_names_char_and_position(text: str, char: str, position: int) -> None:
    with pytest.raises(DigitsError) as info:
        parse_send_digits(text)
    assert info.value.char == char and info.value.position == position
    assert repr(char) in str(info.value) and f"position {position}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("12@", "must be followed"),
        ("1@49", "out of range"),
        ("1@5001", "out of range"),
        ("1" * 257, "at most 256"),
        ("1@99999999999999999999", "out of range"),
    ],
)
def test_invalid_strings(text: str, fragment: str) -> None:
    with pytest.raises(DigitsError, match=fragment):
        parse_send_digits(text)


def test_error_message_shape() -> None:
    with pytest.raises(DigitsError) as info:
        parse_send_digits("123x")
    assert str(info.value) == (
        "send_digits: invalid character 'x' at position 4; "
        "allowed: 0-9 * # A-D w W and a trailing @<ms>"
    )
    assert isinstance(info.value, ValueError)


_VALID = "0123456789*#ABCDabcdwW"


@settings(max_examples=300, deadline=None)
@given(
    body=st.text(alphabet=_VALID, max_size=60),
    tone=st.one_of(st.none(), st.integers(min_value=50, max_value=5000)),
    gap=st.integers(min_value=0, max_value=200),
)
def test_grammar_total_duration(body: str, tone: int | None, gap: int) -> None:
    text = body if tone is None else f"{body}@{tone}"
    steps = parse_send_digits(text, inter_digit_ms=gap)
    tone_ms = DEFAULT_TONE_MS if tone is None else tone
    digits = [c for c in body if c not in "wW"]
    adjacent = sum(
        1 for a, b in zip(body, body[1:], strict=False) if a not in "wW" and b not in "wW"
    )
    expected = (
        len(digits) * tone_ms + 500 * body.count("w") + 1000 * body.count("W") + adjacent * gap
    )
    assert steps_duration_ms(steps) == expected
    assert [s.digit for s in steps if s.digit] == [c.upper() for c in digits]
    # Never two tones back to back when a gap is asked for; pauses never get extra gaps.
    for a, b in zip(steps, steps[1:], strict=False):
        if gap:
            assert not (a.digit and b.digit)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(alphabet=_VALID, max_size=20),
    bad=st.characters(blacklist_characters=_VALID + "@", blacklist_categories=("Cs",)),
    suffix=st.text(alphabet=_VALID, max_size=20),
)
def test_grammar_invalid_character_always_raises(prefix: str, bad: str, suffix: str) -> None:
    with pytest.raises(DigitsError) as info:
        parse_send_digits(prefix + bad + suffix)
    assert info.value.position == len(prefix) + 1
    assert info.value.char == bad


# ---------------------------------------------------------------------------------------------
# Generation (Q.23)


def _component_dbm0(x: np.ndarray, freq: float) -> float:
    t = np.arange(len(x)) / RATE
    c = np.dot(x, np.exp(-2j * np.pi * freq * t)) * 2 / len(x)
    return 20 * np.log10(abs(c) / DBM0_PEAK)


@pytest.mark.parametrize("digit", list(ALL_DIGITS))
def test_tone_frequencies_and_levels(digit: str) -> None:
    x = dtmf_tone(digit, 1000).astype(np.float64)
    assert x.dtype == np.float64 and len(x) == 8000
    low, high = DTMF_FREQUENCIES[digit]
    assert abs(_component_dbm0(x, low) - (-7.0)) < 0.05
    assert abs(_component_dbm0(x, high) - (-5.0)) < 0.05
    # Nothing else: the two components carry all the power.
    p = np.mean(x**2)
    p_tones = (DBM0_PEAK**2 / 2) * (10 ** (-0.7) + 10 ** (-0.5))
    assert abs(10 * np.log10(p / p_tones)) < 0.05


def test_tone_phase_offset_continues() -> None:
    whole = dtmf_tone("7", 60)
    parts = np.concatenate([dtmf_tone("7", 20), dtmf_tone("7", 40, phase_offset=160)])
    assert np.array_equal(whole, parts)


def test_inband_generator_is_sample_exact() -> None:
    steps = parse_send_digits("1w2@130")
    gen = InbandDtmfGenerator(steps)
    frames = []
    for _ in range(1000):
        f = gen.next_frame()
        if f is None:
            break
        assert f.shape == (160,) and f.dtype == np.int16
        frames.append(f)
    audio = np.concatenate(frames)
    total = 8 * steps_duration_ms(steps)  # 130 + 500 + 130 ms
    assert len(audio) == -(-total // 160) * 160
    assert np.array_equal(audio[:1040], dtmf_tone("1", 130))
    assert not np.any(audio[1040 : 1040 + 4000])
    assert np.array_equal(audio[5040:6080], dtmf_tone("2", 130))
    assert not np.any(audio[6080:])
    assert gen.next_frame() is None


# ---------------------------------------------------------------------------------------------
# RFC 4733


def test_event_payload_layout() -> None:
    # RFC 4733 §2.3: event, E|R|volume, 16-bit duration.
    assert encode_event(5, True, 10, 800) == bytes([5, 0x8A, 0x03, 0x20])
    assert encode_event(11, False, 63, 65535) == bytes([11, 0x3F, 0xFF, 0xFF])
    assert decode_event(bytes([5, 0x8A, 0x03, 0x20])) == (5, True, 10, 800)
    assert decode_event(bytes([1, 0xCA, 0, 160])) == (1, True, 10, 160)  # R bit ignored
    with pytest.raises(ValueError):
        decode_event(b"\x01\x02")
    with pytest.raises(ValueError):
        encode_event(1, False, 64, 0)
    with pytest.raises(ValueError):
        encode_event(1, False, 10, 70000)


def _run_sender(sender: Rfc4733Sender, ts0: int = 1000) -> list[tuple[int, list]]:
    ticks = []
    for k in range(10_000):
        out = sender.next_tick(ts0 + 160 * k)
        if out is None:
            break
        ticks.append((k, out))
    return ticks


def test_sender_packets_of_one_event() -> None:
    sender = Rfc4733Sender([DtmfStep("5", 100)])
    ticks = _run_sender(sender, ts0=0xFFFFFF00)
    packets = [(k, decode_event(p), m, ts) for k, out in ticks for p, m, ts in out]
    # Five updates/ends over 100 ms, then two repeats of the end packet.
    assert [p[0] for p in packets] == [0, 1, 2, 3, 4, 5, 6]
    assert {ts for *_, ts in packets} == {0xFFFFFF00}  # start timestamp, fixed
    assert [m for _, _, m, _ in packets] == [True] + [False] * 6
    assert [ev[3] for _, ev, _, _ in packets] == [160, 320, 480, 640, 800, 800, 800]
    assert [ev[1] for _, ev, _, _ in packets] == [False] * 4 + [True] * 3
    assert all(ev[0] == 5 and ev[2] == 10 for _, ev, _, _ in packets)
    assert sender.next_tick(0) is None and not sender.active


def test_sender_refuses_events_beyond_the_duration_field() -> None:
    # 65535 units = 8.19 s at 8 kHz; the grammar caps tones at 5 s, so never split (§2.5.1.3).
    with pytest.raises(ValueError):
        Rfc4733Sender([DtmfStep("1", 9000)])
    ticks = _run_sender(Rfc4733Sender(parse_send_digits("1@5000")))
    last = decode_event(ticks[-1][1][0][0])
    assert last[1] and last[3] == 40000


def test_sender_active_flag_and_pauses() -> None:
    sender = Rfc4733Sender(parse_send_digits("1w2@100"))
    seen = []
    for k in range(200):
        out = sender.next_tick(160 * k)
        if out is None:
            break
        seen.append((bool(out), sender.active))
    assert all(a == b for a, b in seen)
    # 100 ms tone (5 ticks) + 2 repeat ticks, then silence until 600 ms, then the second digit.
    busy = [k for k, (a, _) in enumerate(seen) if a]
    assert busy == [0, 1, 2, 3, 4, 5, 6, 30, 31, 32, 33, 34, 35, 36]


def test_sender_timing_of_pauses_is_exact() -> None:
    steps = parse_send_digits("1w2W3#@130")
    ticks = _run_sender(Rfc4733Sender(steps), ts0=5000)
    starts: dict[int, tuple[int, int]] = {}
    for _, out in ticks:
        for payload, _, ts in out:
            event, end, _, duration = decode_event(payload)
            if end:
                starts[ts] = (event, duration)
    events = sorted(starts.items())
    assert [e for _, (e, _) in events] == [1, 2, 3, 11]
    # Gaps between the end of one event and the start of the next, in ms: 500, 1000, 100,
    # each within half a tick (10 ms) of the schedule and with no drift.
    ends = [ts + d for ts, (_, d) in events]
    gaps = [(events[i + 1][0] - ends[i]) / 8 for i in range(3)]
    for got, want in zip(gaps, [500, 1000, DEFAULT_INTER_DIGIT_MS], strict=True):
        assert abs(got - want) <= 10
    assert (events[-1][0] - events[0][0]) / 8 == pytest.approx(130 * 3 + 500 + 1000 + 100, abs=10)


def _receive_all(ticks: list, drop: set[int] | None = None) -> list[DtmfEvent]:
    rx = Rfc4733Receiver()
    events = []
    n = 0
    for k, out in ticks:
        for payload, marker, ts in out:
            n += 1
            if drop and n in drop:
                continue
            ev = rx.feed(payload, ts, marker, now=k * 0.02)
            if ev:
                events.append(ev)
        ev = rx.flush(k * 0.02)
        if ev:
            events.append(ev)
    for extra in range(1, 200):
        ev = rx.flush(len(ticks) * 0.02 + extra * 0.02)
        if ev:
            events.append(ev)
    return events


def test_sender_to_receiver_round_trip() -> None:
    ticks = _run_sender(Rfc4733Sender(parse_send_digits("12#*A@120")))
    events = _receive_all(ticks)
    assert [e.digit for e in events] == list("12#*A")
    assert all(e.duration_ms == 120 and e.source == "rfc4733" for e in events)


def test_receiver_dedupes_and_survives_loss() -> None:
    ticks = _run_sender(Rfc4733Sender(parse_send_digits("12@100")))
    # Lose the first packet (M bit) and two of the three end packets of digit 1.
    packets = [p for _, out in ticks for p in out]
    ends = [i + 1 for i, (p, _, _) in enumerate(packets) if decode_event(p)[1]]
    events = _receive_all(ticks, drop={1, ends[0], ends[1]})
    assert [(e.digit, e.duration_ms) for e in events] == [("1", 100), ("2", 100)]


def test_receiver_reports_when_all_end_packets_lost() -> None:
    ticks = _run_sender(Rfc4733Sender(parse_send_digits("12@100")))
    packets = [p for _, out in ticks for p in out]
    ends = {i + 1 for i, (p, _, _) in enumerate(packets) if decode_event(p)[1]}
    first_ends = set(sorted(ends)[:3])
    events = _receive_all(ticks, drop=first_ends)
    # Digit 1 is reported when digit 2 starts, with the last duration seen (80 ms).
    assert [(e.digit, e.duration_ms) for e in events] == [("1", 80), ("2", 100)]
    last_ends = set(sorted(ends)[3:])
    events = _receive_all(ticks, drop=last_ends)
    # Digit 2 is reported by flush() after the 1 s timeout.
    assert [(e.digit, e.duration_ms) for e in events] == [("1", 100), ("2", 80)]


def test_receiver_flush_timeout_and_ignores() -> None:
    rx = Rfc4733Receiver()
    assert rx.feed(encode_event(16, True, 10, 800), 100, True, 0.0) is None  # flash: ignored
    assert rx.feed(b"\x01", 100, True, 0.0) is None  # malformed
    assert rx.feed(encode_event(9, False, 10, 160), 200, True, 1.0) is None
    assert rx.flush(1.5) is None
    ev = rx.flush(2.0)
    assert ev == DtmfEvent("9", 20, 200, "rfc4733")
    # A straggler from the finished event does not resurrect it.
    assert rx.feed(encode_event(9, True, 10, 800), 200, False, 2.1) is None
    assert rx.flush(5.0) is None


def test_receiver_two_events_in_one_feed() -> None:
    rx = Rfc4733Receiver()
    assert rx.feed(encode_event(1, False, 10, 160), 0, True, 0.0) is None
    # Only the end packet of the next event arrives: both are owed now.
    first = rx.feed(encode_event(2, True, 10, 800), 2000, True, 0.5)
    second = rx.flush(0.5)
    assert first is not None and second is not None
    assert (first.digit, second.digit) == ("1", "2")


# ---------------------------------------------------------------------------------------------
# Detection (Q.24)


def _amp(dbm0: float) -> float:
    return DBM0_PEAK * 10 ** (dbm0 / 20)


def synth(
    digit: str,
    ms: float,
    *,
    low_dbm0: float = -7.0,
    high_dbm0: float = -5.0,
    low_dev: float = 0.0,
    high_dev: float = 0.0,
) -> np.ndarray:
    low, high = DTMF_FREQUENCIES[digit]
    t = np.arange(int(ms * 8)) / RATE
    return _amp(low_dbm0) * np.sin(2 * np.pi * low * (1 + low_dev) * t + 0.4) + _amp(
        high_dbm0
    ) * np.sin(2 * np.pi * high * (1 + high_dev) * t + 1.3)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(ms * 8))


def codec(x: np.ndarray, name: str | None) -> np.ndarray:
    pcm = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    if name is None:
        return pcm
    return g711.DECODERS[name](g711.ENCODERS[name](pcm))


def detect_many(signals: list[np.ndarray], law: str | None = None) -> list[list[DtmfEvent]]:
    """Run every signal on its own slot of one bank, all slots in each process() call."""
    bank = DtmfDetectorBank(capacity=4)  # grows while allocating
    slots = np.array([bank.allocate() for _ in signals])
    length = max(len(s) for s in signals) + 1600
    length += -length % 160
    batch = np.zeros((len(signals), length), dtype=np.int16)
    for i, s in enumerate(signals):
        batch[i, : len(s)] = codec(s, law)
    found: list[list[DtmfEvent]] = [[] for _ in signals]
    index = {int(s): i for i, s in enumerate(slots)}
    for start in range(0, length, 160):
        for slot, ev in bank.process(slots, batch[:, start : start + 160]):
            found[index[slot]].append(ev)
    return found


def digits_of(events: list[DtmfEvent]) -> str:
    return "".join(e.digit for e in events)


LAWS = [None, "PCMU", "PCMA"]


@pytest.mark.parametrize("law", LAWS)
def test_every_digit_at_every_alignment(law: str | None) -> None:
    signals, want = [], []
    for i, d in enumerate(ALL_DIGITS):
        lead = silence(i * 1.3)  # 0..20 ms, never frame-aligned in the same way
        signals.append(np.concatenate([lead, synth(d, 100)]))
        want.append(d)
    found = detect_many(signals, law)
    assert [digits_of(f) for f in found] == want
    for i, f in enumerate(found):
        assert f[0].source == "inband"
        assert abs(f[0].duration_ms - 100) <= 10
        assert abs(f[0].timestamp - round(i * 1.3 * 8)) <= 40  # within 5 ms


@pytest.mark.parametrize("law", LAWS)
def test_frequency_tolerance(law: str | None) -> None:
    # Q.24: operate with each frequency off by ±1.5 %, never beyond ±3.5 %.
    cases = []
    for d in ALL_DIGITS:
        for dev in (0.015, -0.015):
            cases += [(d, dev, 0.0, True), (d, 0.0, dev, True), (d, dev, -dev, True)]
        for dev in (0.035, -0.035, 0.05):
            cases += [(d, dev, 0.0, False), (d, 0.0, dev, False)]
    found = detect_many([synth(d, 80, low_dev=lo, high_dev=hi) for d, lo, hi, _ in cases], law)
    for (d, lo, hi, ok), f in zip(cases, found, strict=True):
        assert digits_of(f) == (d if ok else ""), (d, lo, hi)


@pytest.mark.parametrize("law", LAWS)
def test_twist(law: str | None) -> None:
    # normal twist: low group stronger than high (accept 8 dB, reject 10 dB);
    # reverse twist: high group stronger than low (accept 4 dB, reject 6 dB).
    cases = []
    for d in "1590#D":
        cases += [
            (d, -4.0, -12.0, True),
            (d, -4.0, -14.0, False),
            (d, -9.0, -5.0, True),
            (d, -11.0, -5.0, False),
            (d, -20.0, -28.0, True),
            (d, -28.0, -24.0, True),
        ]
    found = detect_many([synth(d, 80, low_dbm0=lo, high_dbm0=hi) for d, lo, hi, _ in cases], law)
    for (d, lo, hi, ok), f in zip(cases, found, strict=True):
        assert digits_of(f) == (d if ok else ""), (d, lo, hi)


@pytest.mark.parametrize("law", LAWS)
def test_tone_duration(law: str | None) -> None:
    # Q.24: tones of 40 ms operate; 20 ms do not. Try many alignments to the 20 ms frames.
    leads = [k * 1.0 for k in range(20)]  # every 1 ms phase of the 20 ms frame
    long_ = [np.concatenate([silence(lead), synth(d, 40)]) for lead in leads for d in ALL_DIGITS]
    short = [np.concatenate([silence(lead), synth(d, 20)]) for lead in leads for d in ALL_DIGITS]
    short += [np.concatenate([silence(lead), synth("8", 25)]) for lead in leads]
    found = detect_many(long_ + short, law)
    assert [digits_of(f) for f in found[: len(long_)]] == [d for _ in leads for d in ALL_DIGITS]
    assert all(f == [] for f in found[len(long_) :])


@pytest.mark.parametrize("law", LAWS)
def test_pause_separates_and_dropout_bridges(law: str | None) -> None:
    signals = [
        np.concatenate([synth("6", 60), silence(40), synth("6", 60)]),
        np.concatenate([synth("6", 60), silence(40 + 3.3), synth("6", 60)]),
        np.concatenate([synth("#", 60), silence(10), synth("#", 60)]),  # interruption
        np.concatenate([synth("1", 60), synth("2", 60)]),  # digit change without pause
    ]
    found = detect_many(signals, law)
    assert [digits_of(f) for f in found] == ["66", "66", "#", "12"]


@pytest.mark.parametrize("law", LAWS)
def test_levels(law: str | None) -> None:
    cases = [
        (-3.0, True),
        (-10.0, True),
        (-20.0, True),
        (-30.0, True),
        (-36.0, True),
        (-45.0, False),
        (-55.0, False),
    ]
    found = detect_many([synth("9", 80, low_dbm0=lv, high_dbm0=lv) for lv, _ in cases], law)
    assert [digits_of(f) for f in found] == ["9" if ok else "" for _, ok in cases]


@pytest.mark.parametrize("law", LAWS)
def test_white_noise(law: str | None) -> None:
    rng = np.random.default_rng(20)
    signals = []
    for d in ALL_DIGITS:
        tone = np.concatenate([silence(100), synth(d, 60), silence(100)])
        p = np.mean(synth(d, 60) ** 2)
        # Noise 15 dB below the tone pair, over the whole 4 kHz band.
        signals.append(tone + rng.normal(0, np.sqrt(p / 10**1.5), len(tone)))
    noise_only = [rng.normal(0, 2000, 8000 * 5), rng.normal(0, 100, 8000 * 5)]
    found = detect_many(signals + noise_only, law)
    assert [digits_of(f) for f in found] == list(ALL_DIGITS) + ["", ""]


def test_generator_through_detector() -> None:
    steps = parse_send_digits("1w2W3")
    gen = InbandDtmfGenerator(steps)
    bank = DtmfDetectorBank()
    slot = bank.allocate()
    events = []
    for _ in range(500):
        frame = gen.next_frame()
        if frame is None:
            frame = np.zeros(160, dtype=np.int16)
            if not bank.active_digit(slot) and len(events) == 3:
                break
        for _, ev in bank.process(
            np.array([slot]), g711.ulaw_decode(g711.ulaw_encode(frame))[None]
        ):
            events.append(ev)
    assert digits_of(events) == "123"
    gaps = [
        (events[i + 1].timestamp - events[i].timestamp) / 8 - events[i].duration_ms
        for i in range(2)
    ]
    assert abs(gaps[0] - 500) <= 20 and abs(gaps[1] - 1000) <= 20
    assert all(abs(e.duration_ms - DEFAULT_TONE_MS) <= 20 for e in events)


def test_bank_slots_are_independent_and_reusable() -> None:
    bank = DtmfDetectorBank(capacity=1)
    a, b = bank.allocate(), bank.allocate()  # grows
    tone = codec(synth("4", 100), None)
    tone = np.concatenate([tone, np.zeros(160 * 6 - len(tone) % 160 + 160 * 4, np.int16)])
    frames = tone.reshape(-1, 160)
    events = []
    for f in frames[:4]:  # only slot a hears the first 80 ms
        events += bank.process(np.array([a]), f[None])
    assert bank.active_digit(a) == "4" and bank.active_digit(b) is None
    ev = bank.flush(a)
    assert ev is not None and ev.digit == "4" and bank.active_digit(a) is None
    bank.release(a)
    c = bank.allocate()
    assert c == a and bank.active_digit(c) is None
    for f in frames:
        events += bank.process(np.array([b, c]), np.stack([f, np.zeros(160, np.int16)]))
    assert [(s, e.digit) for s, e in events] == [(b, "4")]
    with pytest.raises(ValueError):
        bank.process(np.array([b]), np.zeros((1, 30), np.int16))
    assert bank.process(np.array([], dtype=int), np.zeros((0, 160), np.int16)) == []


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
def test_tones_made_by_sox_in_ulaw_wav(tmp_path) -> None:
    """DTMF synthesised by sox, stored as a G.711 µ-law WAV, decoded by FFmpeg (PyAV)."""
    from media.play import FileSource

    parts = []
    for i, d in enumerate("159D*#0"):
        low, high = DTMF_FREQUENCIES[d]
        tone, gap = tmp_path / f"t{i}.wav", tmp_path / f"g{i}.wav"
        common = ["-r", "8000", "-b", "16"]
        subprocess.run(
            ["sox", "-D", "-n", *common, "-c", "1", str(tone), "synth", "0.06", "sine",
             str(low), "synth", "0.06", "sine", "mix", str(high), "gain", "-8"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        subprocess.run(
            ["sox", "-D", "-n", *common, "-c", "1", str(gap), "trim", "0", "0.05"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        parts += [str(tone), str(gap)]
    out = tmp_path / "digits.wav"
    subprocess.run(
        ["sox", "-D", *parts, "-e", "u-law", str(out)], check=True, capture_output=True, timeout=30
    )
    src = FileSource(out)
    chunks = []
    while (chunk := src.read(160)) is not None and len(chunks) < 1000:
        chunks.append(chunk)
    pcm = np.concatenate(chunks)
    assert len(pcm) == 7 * 880
    (found,) = detect_many([pcm.astype(np.float64)])
    assert digits_of(found) == "159D*#0"
    assert all(abs(e.duration_ms - 60) <= 10 for e in found)


# ---------------------------------------------------------------------------------------------
# Talk-off: real (synthetic) speech must not produce digits.

SENTENCES = [
    "Hello, you have reached the voicemail of John Smith. Please leave a message after the beep.",
    "Press one for sales, two for support, star to repeat this menu, or pound to go back.",
    "Your balance is one thousand two hundred and thirty four dollars and fifty six cents.",
    "Ninety nine bottles on the wall, eeeee oooo aaaah, singing and whistling loudly.",
]
VOICES = [("en-us", 50), ("en-gb", 90), ("en-us+f3", 70), ("en-us+klatt", 99), ("en-us+m3", 20)]


def _speech(text: str, voice: str, pitch: int) -> np.ndarray:
    import io

    import av

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    with av.open(io.BytesIO(wav)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        chunks = []
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    x = np.concatenate(chunks).astype(np.float64)
    return x / np.max(np.abs(x)) * 24000  # loud: about -1 dBm0 peaks


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech_gives_no_digits() -> None:
    clips = [_speech(t, v, p) for (v, p), t in zip(VOICES, SENTENCES * 2, strict=False)]
    clips += [_speech(SENTENCES[i], "en-us+f1", 99) for i in (0, 3)]
    for law in LAWS:
        found = detect_many(clips, law)
        assert found == [[] for _ in clips], law
    # The same speech with a digit in the middle still yields just that digit.
    mixed = [np.concatenate([c[:8000], synth("7", 100), c[8000:16000]]) for c in clips[:3]]
    assert [digits_of(f) for f in detect_many(mixed, "PCMU")] == ["7", "7", "7"]
