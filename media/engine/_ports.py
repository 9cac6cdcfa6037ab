"""The RTP/RTCP port pool and the socket details of the receive path (kernel time stamps)."""

from __future__ import annotations

import platform
import socket
import struct
import sys
import time


class PortPoolExhausted(RuntimeError):
    """Every RTP/RTCP port pair in the configured range is in use."""


class PortPool:
    """Even RTP ports with RTCP on port + 1 (RFC 3550 §11), handed out round-robin so a port
    freed a moment ago is not reused at once (late packets of the old call would land in
    the new one). Ports busy in other processes are skipped."""

    def __init__(self, host: str, port_min: int, port_max: int) -> None:
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        first = port_min + (port_min & 1)
        self._ports = list(range(first, port_max, 2))  # port + 1 <= port_max
        if not self._ports:
            raise ValueError("port range holds no RTP/RTCP pair")
        self._cursor = 0
        self._busy: dict[int, tuple[socket.socket, socket.socket]] = {}

    @property
    def in_use(self) -> int:
        return len(self._busy)

    @property
    def capacity(self) -> int:
        return len(self._ports)

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def allocate(self) -> tuple[socket.socket, socket.socket, int]:
        """Bind the next free pair; raises :class:`PortPoolExhausted` after one full round."""
        for _ in range(len(self._ports)):
            port = self._ports[self._cursor]
            self._cursor = (self._cursor + 1) % len(self._ports)
            if port in self._busy:
                continue
            try:
                rtp = self._bind(port)
            except OSError:
                continue
            try:
                rtcp = self._bind(port + 1)
            except OSError:
                rtp.close()
                continue
            self._busy[port] = (rtp, rtcp)
            return rtp, rtcp, port
        raise PortPoolExhausted(f"no free RTP port pair in {self._ports[0]}-{self._ports[-1] + 1}")

    def release(self, port: int) -> None:
        """Close the pair's sockets and free the port. Idempotent."""
        pair = self._busy.pop(port, None)
        if pair is not None:
            for sock in pair:
                sock.close()


# Python's socket module does not export SO_TIMESTAMP; Linux's value (SO_TIMESTAMP_OLD, also
# the SCM_TIMESTAMP control message type, struct timeval) is 29 except on PA-RISC.
SO_TIMESTAMP: int | None = getattr(
    socket,
    "SO_TIMESTAMP",
    29 if sys.platform == "linux" and not platform.machine().startswith("parisc") else None,
)
TIMEVAL = struct.Struct("@ll")
TIMESTAMP_CMSG_SPACE = socket.CMSG_SPACE(TIMEVAL.size) if SO_TIMESTAMP is not None else 0


def arrival_wall(ancdata: list[tuple[int, int, bytes]]) -> float:
    """Wall-clock arrival time of an RTCP packet: the kernel's SO_TIMESTAMP when present,
    else now. Sockets are drained once per 20 ms tick, so the tick's own time would add up
    to 20 ms to the RTT of RFC 3550 §6.4.1 (A is the arrival time of the report)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(data) >= TIMEVAL.size:
            sec, usec = TIMEVAL.unpack_from(data)
            return sec + usec / 1e6
    return time.time()
