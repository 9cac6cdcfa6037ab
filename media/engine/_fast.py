"""The send side of the tick by path: which streams the clock visits, and the fast path.

Most of a call's life a stream has nothing to do but send 20 ms of encoded silence: nothing
plays, no digits, no send tap, no bridge. Visiting each such stream (``_send_tick``: ten
attribute reads, a packet built, a ``sendto``) cost ~5 µs of Python per stream per tick. So
every stream is on one of four paths (``StreamState._path``), decided by :meth:`place`:

* ``NONE``: no negotiated media yet, or closed: not visited at all (a call being set up);
* ``FULL``: anything to do (a source, an overlay, digits, a send tap, a bridge, SRTP, comfort
  noise, or silence to send with ptime > 20 or a wideband codec): ``_send_tick`` every tick;
* ``FAST``: sends G.711 silence: its packet is a row of one numpy ``uint8`` array (12-byte
  header + 160 bytes of cached silence), built once when it enters. Each tick is one
  ``sendto`` per row from a prebuilt ``memoryview`` and then three vectorised updates for
  all rows at once (sequence number + 1, timestamp + 160, marker bit cleared). The row holds
  the next packet's sequence number and timestamp; the packet and octet counts are the
  number of fast ticks since the stream entered (or was last synced);
* ``PARKED``: negotiated, nothing to do, nothing to send (on hold, ``a=inactive``/``recvonly``
  or c=0.0.0.0, or ``silence="none"``): only its RTP timestamp runs on (and, when silence is
  not sent, the marker for the next talkspurt is set), computed when it leaves (ticks
  elapsed × step) instead of every tick.

A stream moves between paths when its work starts or ends, without a gap or a jump in its
sequence numbers or timestamps: on leaving, the row's values (or the parked ticks) are
written back into its :class:`~media.rtp.RtpSender` (and a marker bit not yet sent back into
``_marker_next``), and on entering they are read from it, so the packets are byte for byte
those ``_send_tick`` builds (``tests/unit/test_media_fast.py`` compares the two paths).
Whatever may start work marks the stream (:meth:`touch`: ``play``, ``send_digits``,
``add_send_tap``, a bridge, an offer/answer, SRTP, a latched address); the marked streams
are placed again before the tick sends. A ``FULL`` stream is placed again after each of its
ticks (a source that ended, a tap removed). :meth:`sync` writes a ``FAST`` or ``PARKED``
stream's state back without moving it (RTCP sender reports, ``stats()``).

Sockets are not ``connect()``-ed: a connected UDP socket would drop, in the kernel, packets
from any other source, and the receive latching rules (``_receive.py``: the SDP address may
take over for 2 s, a NAT rebinding after 8 in-sequence packets, strays counted) need to see
them. A connected ``send`` saves ~0.5 µs against ``sendto`` on this machine
(``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..rtp import RTP_HEADER
from ._config import FRAME_SAMPLES

if TYPE_CHECKING:
    from ._stream import MediaStream

NONE, FULL, FAST, PARKED = 0, 1, 2, 3
ROW = RTP_HEADER.size + FRAME_SAMPLES  # one 20 ms G.711 packet
FAST_STEP = FRAME_SAMPLES  # G.711: 160 timestamp units per 20 ms


class FastPath:
    """The paths of an engine's streams (see the module docstring)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # False: every negotiated stream takes the full path
        self.full: dict[MediaStream, None] = {}
        # (ticks when parked, timestamp step, whether its ticks are silent sends: see sync)
        self.parked: dict[MediaStream, tuple[int, int, bool]] = {}
        self.dirty: dict[MediaStream, None] = {}
        self.ticks = 0  # timestamp steps so far (a tick and the ticks it skipped)
        self.sends = 0  # fast ticks so far
        self._buf = np.zeros((0, ROW), dtype=np.uint8)
        self._flat = self._buf.reshape(-1).data
        self._seq = self._buf[:, 2:4].view(">u2")
        self._ts = self._buf[:, 4:8].view(">u4")
        self._free: list[int] = []
        self._slot: dict[MediaStream, int] = {}
        self._base: dict[MediaStream, int] = {}  # self.sends when last synced
        # One entry per fast stream: (its socket's sendto, its row, where to, the stream).
        self._plan: list[tuple[Any, memoryview, tuple[str, int], MediaStream]] = []
        self._index: dict[MediaStream, int] = {}  # position in _plan

    def __len__(self) -> int:
        return len(self._plan)

    # --- placing streams -----------------------------------------------------------------

    def touch(self, stream: MediaStream) -> None:
        """``stream``'s work may have changed: place it again before the next send."""
        self.dirty[stream] = None

    def kind(self, s: MediaStream) -> int:
        """The path ``s`` belongs on now."""
        neg = s._negotiated
        if neg is None or s.closed:
            return NONE
        silence = s._config.silence
        if (
            not self.enabled
            or s._playing is not None
            or s._play_queue
            or s._overlays
            or s._digits is not None
            or s._digits_queue
            or s._send_taps
            or s._bridge_peer is not None
            or s._srtp is not None
            or s._pending
            or silence == "cn"
        ):
            return FULL
        if not neg.sending or s._remote_rtp is None or silence == "none":
            return PARKED  # nothing to send (silence="none": a silent tick sends nothing)
        if s._frames_per_packet != 1 or not s._stateless_encoder:
            return FULL
        return FAST if len(s._silence_payload()) == FRAME_SAMPLES else FULL

    def place(self, s: MediaStream) -> None:
        kind = self.kind(s)
        if kind == s._path and kind in (NONE, FULL):
            return
        # FAST and PARKED streams are placed afresh: a new codec, address or direction
        # changes their row, or how their parked ticks count (synced with the old values).
        self.leave(s)
        if kind == FULL:
            self.full[s] = None
        elif kind == PARKED:
            self.parked[s] = (self.ticks, s._ts_step, s._can_send)
        elif kind == FAST:
            self._enter_fast(s)
        s._path = kind

    def leave(self, s: MediaStream) -> None:
        """Take ``s`` off its path, its sender state brought up to date."""
        path = s._path
        if path == FULL:
            self.full.pop(s, None)
        elif path == PARKED:
            self.sync(s)
            del self.parked[s]
        elif path == FAST:
            self.sync(s)
            slot = self._slot.pop(s)
            if self._buf[slot, 1] & 0x80:  # entered with a marker it has not sent yet
                s._marker_next = True
            del self._base[s]
            self._free.append(slot)
            i = self._index.pop(s)
            last = self._plan.pop()
            if i < len(self._plan):
                self._plan[i] = last
                self._index[last[3]] = i
        s._path = NONE

    def sync(self, s: MediaStream) -> None:
        """Write the state of a ``FAST`` or ``PARKED`` stream back into its RtpSender."""
        sender = s._sender
        if s._path == FAST:
            slot = self._slot[s]
            n = self.sends - self._base[s]
            self._base[s] = self.sends
            sender.sequence_number = int(self._seq[slot, 0])
            sender.timestamp = int(self._ts[slot, 0])
            sender.packets_sent += n
            sender.octets_sent += n * FRAME_SAMPLES
        elif s._path == PARKED:
            since, step, silent_sends = self.parked[s]
            self.parked[s] = (self.ticks, step, silent_sends)
            n = self.ticks - since
            sender.advance(n * step)
            if silent_sends and n:
                # What each tick of silence="none" does (_audio_packets): nothing sent, and
                # a marker on the first packet after the silence (RFC 3551 §4.1).
                s._silent_ticks += n
                s._marker_next = True

    def _enter_fast(self, s: MediaStream) -> None:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        sender = s._sender
        row = self._buf[slot]
        RTP_HEADER.pack_into(
            row,
            0,
            0x80,
            (0x80 if s._marker_next else 0) | s._send_pt,
            sender.sequence_number,
            sender.timestamp,
            sender.ssrc,
        )
        row[RTP_HEADER.size :] = np.frombuffer(s._silence_payload(), dtype=np.uint8)
        s._marker_next = False
        self._slot[s] = slot
        self._base[s] = self.sends
        remote = s._remote_rtp
        assert remote is not None
        self._index[s] = len(self._plan)
        self._plan.append((s._rtp_sock.sendto, self._view(slot), remote, s))

    def _view(self, slot: int) -> memoryview:
        return self._flat[slot * ROW : (slot + 1) * ROW]

    def _grow(self) -> None:
        old = self._buf
        cap = max(64, 2 * len(old))
        buf = np.zeros((cap, ROW), dtype=np.uint8)
        buf[: len(old)] = old
        self._buf = buf
        self._flat = buf.reshape(-1).data
        self._seq = buf[:, 2:4].view(">u2")
        self._ts = buf[:, 4:8].view(">u4")
        self._free.extend(range(cap - 1, len(old) - 1, -1))
        # The old rows' views point into the old array: rebuild them.
        self._plan = [
            (send, self._view(self._slot[s]), remote, s) for send, _view, remote, s in self._plan
        ]

    # --- the tick ------------------------------------------------------------------------

    def send(self, skipped: int) -> None:
        """Send every fast stream's packet of this tick, then move all rows on by one."""
        plan = self._plan
        if not plan:
            return
        if skipped:
            self._ts += skipped * FAST_STEP
        for send, view, remote, stream in plan:
            try:
                send(view, remote)
            except OSError:
                stream.send_errors += 1
        self._seq += 1
        self._ts += FAST_STEP
        self._buf[:, 1] &= 0x7F
        self.sends += 1
