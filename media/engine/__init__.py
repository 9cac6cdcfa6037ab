"""The media engine: one clock, a port pool, and the RTP streams it services in batches.

Why one clock: an asyncio callback per packet costs ~20 µs and a timer per stream drifts; a
raw non-blocking ``sendto``/``recvfrom`` costs ~3 µs. So :class:`MediaEngine` arms a single
``loop.call_at`` every 20 ms against absolute deadlines (``t0 + k * 20 ms`` on the loop's
monotonic clock, never relative sleeps) and on each tick visits only the streams with work:

1. reads the RTP/RTCP sockets that have data (one ``epoll`` poll with timeout 0 over all of
   them, one ``recvfrom`` per ready socket, a second poll for the rare socket with more),
   parses RTP, updates RFC 3550 statistics, feeds RFC 4733 receivers and decodes audio into
   a small per-stream playout FIFO when someone listens;
2. fires the RTP inactivity timeouts that are due (a heap of deadlines); for the streams whose
   received audio someone reads (taps, bridges, the in-band DTMF detector) or that owe an
   RFC 4733 event, takes one 20 ms frame (silence on underrun), runs the detector bank over
   all of them in one numpy call, then the taps (AMD, recorders) and bridges;
3. sends: streams with something to send besides silence (a source, digits, a send tap, a
   bridge, SRTP...) build their packet (:mod:`._send`); every other answered stream is a row
   of one numpy array (:mod:`._fast`): one ``sendto`` each from a prebuilt buffer, then one
   vectorised update of all sequence numbers and timestamps. A stream that has not been
   answered, or is on hold with nothing to send, costs nothing;
4. sends the RTCP reports that are due (a heap of report times).

If a tick runs more than one period late, the clock skips the missed ticks (counted in
``clock_stats()['skipped']``) and RTP timestamps jump accordingly, so the far end sees a gap
rather than audio that drifts further and further behind.

Layout: :mod:`._clock` (:class:`MediaEngine`: the clock and the tick batch, the detector bank,
bridges); :mod:`._stream` (:class:`MediaStream`: offer/answer, the application API), whose
fields are declared once in :mod:`._state` and whose per-tick halves are its base classes in
:mod:`._receive` (steps 1-2: symmetric RTP, RFC 4733 receivers, playout, the DTMF dedupe rule)
and :mod:`._send` (step 3: sources, overlays, bridged audio, digits, in order of precedence);
:mod:`._fast` (which streams each tick visits, the fast path of plain streams);
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
