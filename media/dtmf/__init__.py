"""DTMF: the ``send_digits`` grammar, in-band tones, RFC 4733 events, and a Goertzel detector.

Four independent pieces, all sans-I/O (time and RTP timestamps are arguments), in two modules
along the direction of the digits:

* generation (:mod:`media.dtmf._generate`): :func:`parse_send_digits` turns ``"1w2W3@300"``
  into a list of :class:`DtmfStep`; :func:`dtmf_tone` / :class:`InbandDtmfGenerator`
  synthesise ITU-T Q.23 dual tones; :class:`Rfc4733Sender` speaks RFC 4733 telephone-events;
* detection (:mod:`media.dtmf._detect`): :class:`Rfc4733Receiver` reads them;
  :class:`DtmfDetectorBank` detects in-band digits on many streams with one numpy pass per
  tick, to the ITU-T Q.24 tolerances.

What both share (the Q.23 keypad, RFC 4733 event codes and payload, dBm0 levels) is in
:mod:`media.dtmf._tables`. Import the names from here.
"""

from ._detect import DtmfDetectorBank, DtmfEvent, Rfc4733Receiver
from ._generate import (
    DEFAULT_INTER_DIGIT_MS,
    DEFAULT_TONE_MS,
    MAX_SEND_DIGITS_LEN,
    MAX_TONE_MS,
    MIN_TONE_MS,
    PAUSE_MS,
    DigitsError,
    DtmfStep,
    InbandDtmfGenerator,
    Rfc4733Sender,
    dtmf_tone,
    parse_send_digits,
    steps_duration_ms,
)
from ._tables import (
    DBM0_PEAK,
    DIGIT_TO_EVENT,
    DTMF_FREQUENCIES,
    EVENT_TO_DIGIT,
    HIGH_FREQS,
    LOW_FREQS,
    dbm0_to_amplitude,
    decode_event,
    encode_event,
)

__all__ = [
    "DBM0_PEAK",
    "DEFAULT_INTER_DIGIT_MS",
    "DEFAULT_TONE_MS",
    "DIGIT_TO_EVENT",
    "DTMF_FREQUENCIES",
    "EVENT_TO_DIGIT",
    "HIGH_FREQS",
    "LOW_FREQS",
    "MAX_SEND_DIGITS_LEN",
    "MAX_TONE_MS",
    "MIN_TONE_MS",
    "PAUSE_MS",
    "DigitsError",
    "DtmfDetectorBank",
    "DtmfEvent",
    "DtmfStep",
    "InbandDtmfGenerator",
    "Rfc4733Receiver",
    "Rfc4733Sender",
    "dbm0_to_amplitude",
    "decode_event",
    "dtmf_tone",
    "encode_event",
    "parse_send_digits",
    "steps_duration_ms",
]
