"""SIP traces: the Call-ID found in a message's head, the per-call bounds, the unclaimed LRU."""

from __future__ import annotations

from sip.aio.trace import TracedMessage, call_id_of
from softswitch.trace import TraceBook


def _msg(
    call_id: str,
    first: str = "INVITE sip:bob@127.0.0.1 SIP/2.0",
    body: bytes = b"",
    direction: str = "out",
    compact: bool = False,
) -> TracedMessage:
    header = b"i" if compact else b"Call-ID"
    data = (
        f"{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060\r\n".encode()
        + header
        + f": {call_id}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return TracedMessage.now(direction, "udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070), data)


def test_call_id_of_finds_the_long_and_compact_forms_in_the_head_only() -> None:
    assert call_id_of(b"BYE sip:a SIP/2.0\r\ncall-id:  abc@h \r\n\r\n") == "abc@h"
    assert call_id_of(b"BYE sip:a SIP/2.0\r\ni: xyz\r\n\r\n") == "xyz"
    assert call_id_of(b"BYE sip:a SIP/2.0\r\nTo: <sip:b>\r\n\r\nCall-ID: body") is None
    assert _msg("c1", compact=True).call_id == "c1"


def test_messages_are_kept_in_order_with_their_direction_addresses_and_text() -> None:
    book = TraceBook()
    book.record(_msg("c1"))
    book.record(_msg("c1", "SIP/2.0 180 Ringing", direction="in"))
    book.claim("c1")
    messages, dropped = book.messages(["c1"])
    assert dropped == 0
    assert [m["first_line"] for m in messages] == [
        "INVITE sip:bob@127.0.0.1 SIP/2.0",
        "SIP/2.0 180 Ringing",
    ]
    out, back = messages
    assert (out["direction"], out["source"], out["destination"]) == (
        "out",
        "127.0.0.1:5060",
        "127.0.0.1:5070",
    )
    assert (back["direction"], back["source"], back["destination"]) == (
        "in",
        "127.0.0.1:5070",
        "127.0.0.1:5060",
    )
    assert out["transport"] == "udp" and out["size"] == len(out["text"].encode())
    assert out["monotonic"] <= back["monotonic"] and out["time"] > 1e9


def test_a_call_keeps_at_most_max_messages_and_counts_the_rest() -> None:
    book = TraceBook(max_messages=5)
    book.claim("c1")
    for _ in range(12):
        book.record(_msg("c1"))
    messages, dropped = book.messages(["c1"])
    assert (len(messages), dropped) == (5, 7)


def test_a_call_keeps_at_most_max_bytes() -> None:
    size = len(_msg("c1", body=b"v" * 900).data)
    book = TraceBook(max_bytes=3 * size + 10)
    book.claim("c1")
    for _ in range(10):
        book.record(_msg("c1", body=b"v" * 900))
    messages, dropped = book.messages(["c1"])
    assert sum(m["size"] for m in messages) <= 3 * size + 10
    assert len(messages) == 3 and dropped == 7
    # a message bigger than the whole budget is never kept, a small one still fits later
    book.record(_msg("c1", body=b"x" * 5000))
    assert book.messages(["c1"])[1] == 8


def test_unclaimed_call_ids_are_bounded_oldest_first_and_claim_keeps_what_came_before() -> None:
    book = TraceBook(max_unclaimed=3)
    for n in range(5):
        book.record(_msg(f"stray{n}"))
    assert len(book) == 3
    assert book.messages(["stray0", "stray1"]) == ([], 0)
    book.claim("stray4")  # an inbound INVITE's Call-ID: filed before the call existed
    for n in range(5, 10):
        book.record(_msg(f"stray{n}"))
    assert len(book.messages(["stray4"])[0]) == 1  # claimed ones are never evicted
    assert len(book) == 4


def test_take_merges_legs_by_time_and_forgets_them() -> None:
    book = TraceBook()
    book.claim("a")
    book.claim("b")
    book.record(_msg("a"))
    book.record(_msg("b"))
    book.record(_msg("a", "BYE sip:x SIP/2.0"))
    messages, _ = book.take(["a", "b"])
    assert [m["call_id"] for m in messages] == ["a", "b", "a"]
    assert len(book) == 0
    assert book.messages(["a"]) == ([], 0)


def test_messages_without_call_id_are_ignored() -> None:
    book = TraceBook()
    book.record(TracedMessage.now("in", "udp", ("127.0.0.1", 1), ("127.0.0.1", 2), b"\r\n\r\n"))
    assert len(book) == 0
