"""``sip`` is a SIP library and nothing else: it makes no process-wide decisions (its imports
are checked by the import-linter contracts, tests/unit/test_layers.py)."""

from __future__ import annotations

from pathlib import Path

SIP = Path(__file__).resolve().parents[2] / "sip"


def test_sip_leaves_the_process_alone():
    """BLAS threads and the GC policy are the program's decisions (softswitch.process)."""
    for path in SIP.rglob("*.py"):
        text = path.read_text()
        assert "OPENBLAS_NUM_THREADS" not in text and "gc.freeze" not in text, path


def test_icmp_extended_error_parsed_from_the_control_message():
    """``recvmsg(MSG_ERRQUEUE)`` hands a ``sock_extended_err`` (errno, origin, ICMP type and
    code) with the original destination as the message's name."""
    import errno
    import socket
    import struct

    from sip.aio.transport import SO_EE_ORIGIN_ICMP, parse_extended_error

    data = struct.pack("=IBBBBII", errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3, 0, 0, 0) + bytes(16)
    error = parse_extended_error(socket.SOL_IP, 11, data, ("127.0.0.1", 5099))
    assert error is not None
    assert (error.destination, error.errno, error.origin, error.icmp_type, error.icmp_code) == (
        ("127.0.0.1", 5099), errno.ECONNREFUSED, SO_EE_ORIGIN_ICMP, 3, 3)
    assert parse_extended_error(socket.SOL_SOCKET, 1, data, ("127.0.0.1", 1)) is None  # other cmsg
    assert parse_extended_error(socket.SOL_IP, 11, data[:8], ("127.0.0.1", 1)) is None  # truncated
