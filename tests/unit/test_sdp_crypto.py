"""SDES (RFC 4568): the a=crypto attribute's grammar, the examples of the RFC, and the
offer/answer rules of the three SRTP policies, on plain SDP text."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.sdp import (
    CryptoAttribute,
    CryptoError,
    KeyParams,
    LocalCrypto,
    SdpError,
    SessionDescription,
    answer_offer,
    build_offer,
    crypto_attributes,
)

# RFC 4568 §4 / §5.1 / §9.2 examples, verbatim.
RFC_OFFER = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
RFC_ANSWER = "1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^20|1:32"
RFC_SHA1_32 = "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32"
RFC_TWO_KEYS = (
    "1 AES_CM_128_HMAC_SHA1_80 "
    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4;"
    "inline:QUJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0|2^20|2:4 FEC_ORDER=FEC_SRTP"
)
PLAIN_KEY = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


def test_rfc_4568_examples_parse_and_write_back() -> None:
    for text in (RFC_OFFER, RFC_ANSWER, RFC_SHA1_32, RFC_TWO_KEYS):
        assert str(CryptoAttribute.parse(text)) == text
    attr = CryptoAttribute.parse(RFC_OFFER)
    assert attr.tag == 1 and attr.suite == "AES_CM_128_HMAC_SHA1_80"
    (key,) = attr.keys
    assert key.key_salt == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
    assert len(key.key_salt) == 30 and key.lifetime == 2**20 and key.mki == (1, 32)
    two = CryptoAttribute.parse(RFC_TWO_KEYS)
    assert [k.mki for k in two.keys] == [(1, 4), (2, 4)]
    assert two.session_params == ("FEC_ORDER=FEC_SRTP",)


def test_lifetime_as_a_plain_number_and_no_lifetime() -> None:
    attr = CryptoAttribute.parse(f"7 AES_CM_128_HMAC_SHA1_32 {PLAIN_KEY}|1048576")
    assert attr.keys[0].lifetime == 2**20 and attr.keys[0].mki is None
    assert attr.unsupported() is None  # the peer's lifetime binds the peer's key only
    attr = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 {PLAIN_KEY}")
    assert attr.keys[0].lifetime is None and attr.unsupported() is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "needs tag, suite and key-params"),
        ("x AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY, "tag"),
        ("1234567890 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY, "tag"),
        ("1 AES-CM AES_CM " + PLAIN_KEY, "crypto-suite"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline", "key-param"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64", "base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + "|2^x", "lifetime"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + "|1:0", "MKI length"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + "|1:4|2^20", "lifetime"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + "|2^20|1:4|x", "more than"),
    ],
)
def test_malformed_lines_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(CryptoError, match=why) as info:
        CryptoAttribute.parse(text)
    assert isinstance(info.value, SdpError)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1 AEAD_AES_256_GCM inline:" + "A" * 60, "suite AEAD_AES_256_GCM is not supported"),
        ("1 F8_128_HMAC_SHA1_80 " + PLAIN_KEY, "not supported"),
        (RFC_OFFER, "MKI"),
        (RFC_TWO_KEYS, "several keys"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + " UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + " KDR=1", "KDR=1"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(b"k" * 16).decode(), "30-byte"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:https://keys.example", "key method"),
    ],
)
def test_unsupported_lines_are_named(text: str, why: str) -> None:
    reason = CryptoAttribute.parse(text).unsupported()
    assert reason is not None and why in reason


def test_window_size_hint_is_accepted() -> None:
    attr = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 {PLAIN_KEY} WSH=128")
    assert attr.unsupported() is None


@given(
    tag=st.integers(0, 999_999_999),
    suite=st.sampled_from(["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]),
    key=st.binary(min_size=30, max_size=30),
    lifetime=st.none() | st.integers(1, 2**48),
    mki=st.none() | st.tuples(st.integers(0, 2**32), st.integers(1, 128)),
)
def test_serialize_parse_round_trip(
    tag: int, suite: str, key: bytes, lifetime: int | None, mki: tuple[int, int] | None
) -> None:
    attr = CryptoAttribute(tag, suite, (KeyParams(key, lifetime, mki),))
    assert CryptoAttribute.parse(str(attr)) == attr


# --- offer/answer ----------------------------------------------------------------------


def offer_text(**kw: object) -> str:
    return build_offer(address="127.0.0.1", port=4000, session_id=1, version=1, **kw)  # type: ignore[arg-type]


def audio(sdp: str):  # type: ignore[no-untyped-def]
    return SessionDescription.parse(sdp).first_audio()[1]


def peer_answer(proto: str, crypto: str | None) -> str:
    lines = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio 5000 {proto} 0\r\n"
    )
    return lines + (f"a=crypto:{crypto}\r\n" if crypto else "")


def test_mandatory_offer_is_savp_with_both_suites_and_fresh_keys() -> None:
    local = LocalCrypto("mandatory")
    media = audio(local.secure_offer(offer_text()))
    assert media.proto == "RTP/SAVP"
    lines = crypto_attributes(media)
    assert [(c.tag, c.suite) for c in lines] == [  # type: ignore[union-attr]
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert all(c.unsupported() is None for c in lines)  # type: ignore[union-attr]
    # Keys are per stream and repeat in re-offers (the body stays the same, RFC 3264 §8).
    assert local.secure_offer(offer_text()) == local.secure_offer(offer_text())
    assert LocalCrypto("mandatory").keys != local.keys


def test_optional_offer_is_avp_with_crypto_lines() -> None:
    text = LocalCrypto("optional").secure_offer(offer_text())
    media = audio(text)
    assert media.proto == "RTP/AVP" and len(crypto_attributes(media)) == 2
    # The crypto lines come before the direction attribute.
    assert text.index("a=crypto:2") < text.index("a=sendrecv")


def test_answer_with_crypto_gives_both_keys() -> None:
    local = LocalCrypto("optional")
    offer = SessionDescription.parse(local.secure_offer(offer_text()))
    theirs = "2 AES_CM_128_HMAC_SHA1_32 " + PLAIN_KEY
    params = local.read_answer(offer, SessionDescription.parse(peer_answer("RTP/AVP", theirs)))
    assert params is not None and params.suite == "AES_CM_128_HMAC_SHA1_32" and params.tag == 2
    assert params.send_key == local.keys["AES_CM_128_HMAC_SHA1_32"]
    assert params.receive_key == base64.b64decode(PLAIN_KEY.split(":")[1])


def test_optional_falls_back_to_rtp_and_mandatory_refuses() -> None:
    plain = SessionDescription.parse(peer_answer("RTP/AVP", None))
    optional = LocalCrypto("optional")
    offer = SessionDescription.parse(optional.secure_offer(offer_text()))
    assert optional.read_answer(offer, plain) is None
    mandatory = LocalCrypto("mandatory")
    offer = SessionDescription.parse(mandatory.secure_offer(offer_text()))
    with pytest.raises(SdpError, match="SRTP is mandatory but the answer has no a=crypto"):
        mandatory.read_answer(offer, plain)


@pytest.mark.parametrize(
    ("crypto", "why"),
    [
        ("3 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY, "matches no line we offered"),
        ("1 AES_CM_128_HMAC_SHA1_32 " + PLAIN_KEY, "matches no line we offered"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + PLAIN_KEY + "|2^20|1:4", "MKI"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:@@", "malformed"),
    ],
)
def test_bad_crypto_answers_are_refused(crypto: str, why: str) -> None:
    local = LocalCrypto("optional")
    offer = SessionDescription.parse(local.secure_offer(offer_text()))
    with pytest.raises(SdpError, match=why):
        local.read_answer(offer, SessionDescription.parse(peer_answer("RTP/SAVP", crypto)))


def _answer(local: LocalCrypto, offer: str) -> tuple[str, object]:
    text, _ = answer_offer(
        offer, address="127.0.0.1", port=6000, session_id=2, version=1, secure=True
    )
    return local.secure_answer(offer, text)


def test_answering_picks_the_first_usable_line_with_its_tag() -> None:
    offer = (
        peer_answer("RTP/SAVP", RFC_OFFER)  # MKI: skipped
        + "a=crypto:5 AES_CM_128_HMAC_SHA1_32 "
        + PLAIN_KEY
        + "\r\na=crypto:6 AES_CM_128_HMAC_SHA1_80 "
        + PLAIN_KEY
        + "\r\n"
    )
    local = LocalCrypto("optional")
    text, params = _answer(local, offer)
    media = audio(text)
    assert media.proto == "RTP/SAVP"  # the answer mirrors the offer's profile
    (line,) = crypto_attributes(media)
    assert isinstance(line, CryptoAttribute)
    assert (line.tag, line.suite) == (5, "AES_CM_128_HMAC_SHA1_32")
    assert line.key_salt == local.keys["AES_CM_128_HMAC_SHA1_32"]
    assert params is not None and params.receive_key == base64.b64decode(PLAIN_KEY[7:])  # type: ignore[attr-defined]


def test_answering_without_usable_crypto() -> None:
    plain_offer = peer_answer("RTP/AVP", None)
    text, params = _answer(LocalCrypto("optional"), plain_offer)
    assert params is None and "a=crypto" not in text
    with pytest.raises(SdpError, match="no usable SRTP crypto in the offer .*no a=crypto line"):
        _answer(LocalCrypto("mandatory"), plain_offer)
    with pytest.raises(SdpError, match="MKI is not supported"):
        _answer(LocalCrypto("optional"), peer_answer("RTP/SAVP", RFC_OFFER))


def test_savp_offer_is_refused_without_secure() -> None:
    with pytest.raises(SdpError, match="no acceptable audio stream"):
        answer_offer(
            peer_answer("RTP/SAVP", RFC_ANSWER),
            address="127.0.0.1",
            port=6000,
            session_id=2,
            version=1,
        )
