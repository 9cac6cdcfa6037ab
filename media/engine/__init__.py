"""The media engine: one clock, a port pool, and the RTP streams it services in batches.

Why one clock: an asyncio callback per packet costs ~20 µs and a timer per stream drifts; a
raw non-blocking ``sendto``/``recvfrom`` costs ~3 µs. So :class:`MediaEngine` arms a single
``loop.call_at`` every 20 ms against absolute deadlines (``t0 + k * 20 ms`` on the loop's
monotonic clock, never relative sleeps) and on each tick, for every stream at once:

1. drains the readable RTP/RTCP sockets (one ``selectors`` poll with timeout 0, then
   ``recvfrom`` until ``BlockingIOError``), parses RTP, updates RFC 3550 statistics, feeds
   RFC 4733 receivers and decodes audio into a small per-stream playout FIFO;
2. takes one 20 ms frame per stream from the FIFO (silence on underrun), runs the in-band
   DTMF detector bank over all of them in one numpy call, then the taps (AMD, recorders)
   and bridges;
3. builds each stream's due packet (RFC 4733 events, in-band tones, the playing source,
   bridged audio, or silence/comfort noise) and sends it with a raw ``sendto``;
4. sends RTCP reports that are due.

If a tick runs more than one period late, the clock skips the missed ticks (counted in
``clock_stats()['skipped']``) and RTP timestamps jump accordingly, so the far end sees a gap
rather than audio that drifts further and further behind.

Layout: :mod:`._clock` (:class:`MediaEngine`: the clock and the tick batch, the detector bank,
bridges); :mod:`._stream` (:class:`MediaStream`: offer/answer, the application API), whose
fields are declared once in :mod:`._state` and whose per-tick halves are its base classes in
:mod:`._receive` (steps 1-2: symmetric RTP, RFC 4733 receivers, playout, the DTMF dedupe rule)
and :mod:`._send` (step 3: sources, overlays, bridged audio, digits, in order of precedence);
:mod:`._ports` (:class:`PortPool`, socket time stamps); :mod:`._config` (:class:`MediaConfig`);
:mod:`._srtp` (:class:`SrtpContext`: SRTP/SRTCP protect and unprotect with libsrtp, for a
stream created with ``create_stream(srtp="optional" | "mandatory")``).
Import the names from here.
"""

from ._clock import LATE_THRESHOLD, LATENESS_WINDOW, MAX_PACKETS_PER_TICK, TICK, MediaEngine
from ._config import (
    CLOCK_RATE,
    FRAME_SAMPLES,
    SUPPORTED_CODECS,
    MediaConfig,
    UnsupportedCodec,
    codec_list,
)
from ._ports import PortPool, PortPoolExhausted
from ._srtp import SrtpContext
from ._stream import MediaStream

__all__ = [
    "CLOCK_RATE",
    "FRAME_SAMPLES",
    "LATENESS_WINDOW",
    "LATE_THRESHOLD",
    "MAX_PACKETS_PER_TICK",
    "TICK",
    "MediaConfig",
    "MediaEngine",
    "MediaStream",
    "PortPool",
    "PortPoolExhausted",
    "SUPPORTED_CODECS",
    "SrtpContext",
    "UnsupportedCodec",
    "codec_list",
]
