"""Live call control over the API on an answered call: Play/Speak, DTMF and Record.

Over the A leg's RTP stream (:class:`media.engine.MediaStream`) and the B leg a ``<Dial>``
bridged it to:

* Play/Speak: ``mix=true`` mixes the audio into what the leg hears (the XML prompt, a
  bridged B leg, or silence) without cutting or delaying it; ``mix=false`` stops what the
  leg hears now (the XML verb playing is cut short and the application goes on with its next
  verb) and plays at once. ``length`` bounds the playback, ``loop`` repeats it until
  stopped; stopping stops only what the API started;
* DTMF: the ``send_digits`` grammar, RFC 4733 or in-band as negotiated;
* Record: both directions of the A leg (what the callee says and what it hears, including a
  bridged B leg), mixed to mono, to ``<data_dir>/recordings/<recording_id>.<format>``, until
  ``time_limit``, a stop or hangup; then the callback gets the dialect's recording parameters.

Raises the core's domain errors (:mod:`softswitch.model`), never HTTP statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from media.dtmf import DtmfStep

from .model import CallNotAnswered, MediaUnavailable, OperationFailed

if TYPE_CHECKING:
    from .call import Call, CallManager

log = logging.getLogger("softswitch.call")

__all__ = ["LiveOps", "PlayOrder", "RecordOrder", "SpeakOrder"]


class PlayOrder(Protocol):
    """Play: ``urls`` in order, ``length`` seconds at most (None: no limit), on ``legs``
    (aleg, bleg, both), ``loop`` until stopped, ``mix`` with what the call hears."""

    @property
    def urls(self) -> Sequence[str]: ...
    @property
    def length(self) -> int | None: ...
    @property
    def legs(self) -> str: ...
    @property
    def loop(self) -> bool: ...
    @property
    def mix(self) -> bool: ...


class SpeakOrder(Protocol):
    """Speak: ``text`` in ``voice`` and ``language``, played like :class:`PlayOrder`."""

    @property
    def text(self) -> str: ...
    @property
    def voice(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def legs(self) -> str: ...
    @property
    def loop(self) -> bool: ...
    @property
    def mix(self) -> bool: ...


class RecordOrder(Protocol):
    """Record: ``time_limit`` seconds at most, ``file_format`` mp3 or wav, then the callback."""

    @property
    def time_limit(self) -> int: ...
    @property
    def file_format(self) -> str: ...
    @property
    def callback_url(self) -> str | None: ...
    @property
    def callback_method(self) -> str: ...
    @property
    def transcription_requested(self) -> bool: ...


class LiveOps:
    """Play, Speak, DTMF and Record on live calls of one :class:`CallManager`."""

    def __init__(self, manager: CallManager) -> None:
        self.m = manager
        self._tts_cache: Any = None

    @property
    def data_dir(self) -> Path:
        return self.m.data_dir

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        return self.m.spawn(coro, name)

    def media_legs(self, call: Call, legs: str) -> list[Any]:
        """The RTP streams a live-control request acts on: the A leg, the bridged B leg, or both.

        Raises :class:`CallNotAnswered` when the call is not answered, and
        :class:`MediaUnavailable` when it has no media, or no B leg in progress for ``bleg``."""
        if call.answered_at is None:
            raise CallNotAnswered(f"call {call.call_uuid} is not answered yet")
        out: list[Any] = []
        if legs in ("aleg", "both"):
            media = getattr(call.leg, "media", None)
            if media is None or getattr(media, "closed", False):
                raise MediaUnavailable(f"call {call.call_uuid} has no media stream")
            out.append(media)
        if legs in ("bleg", "both"):
            b = self.bridged_leg(call)
            if b is None:
                raise MediaUnavailable(f"call {call.call_uuid} has no bridged B leg")
            out.append(b.media)
        return out

    def bridged_leg(self, call: Call) -> Any | None:
        """The newest B leg of a ``<Dial>`` that is answered and still up, if any."""
        for b in reversed(call.b_legs):
            media = getattr(b, "media", None)
            if (getattr(b, "answered_at", None) is not None and getattr(b, "terminated", None) is None
                    and media is not None and not media.closed):
                return b
        return None

    def _tts(self) -> Any:
        if self._tts_cache is None:
            from .app.sources import TtsCache

            self._tts_cache = TtsCache()
        return self._tts_cache

    def _media_cache(self, call: Call) -> Any:
        cache = getattr(call.control, "media_cache", None)
        if cache is None:
            from .app.sources import MediaCache

            cache = MediaCache(self.data_dir / "cache" / "media", allowed_dirs=(self.data_dir,))
        return cache

    async def play(self, call: Call, req: PlayOrder) -> None:
        """Start ``req.urls`` on the leg(s); the files are fetched and played in the background."""
        streams = self.media_legs(call, req.legs)
        playback = _Playback("play", req.length, req.loop)
        cache = self._media_cache(call)

        async def sources() -> list[Any]:
            from media.play import FileSource

            paths = [await cache.path_for(u) for u in req.urls]
            # Each factory decodes a file (FileSource decodes up to 16 MB up front):
            # _start_playback runs them in a worker thread, off the media clock's loop.
            return [lambda p=p: FileSource(p, loop=1) for p in paths]

        self._start_playback(call, playback, streams, sources, req.mix)

    async def speak(self, call: Call, req: SpeakOrder) -> None:
        """Start text to speech (espeak-ng, cached per text and voice) on the leg(s)."""
        from .app.sources import espeak_voice

        streams = self.media_legs(call, req.legs)
        playback = _Playback("speak", None, req.loop)
        voice = espeak_voice(req.voice, req.language)
        cache = self._tts()

        async def sources() -> list[Any]:
            from media.play import ArraySource, tts_to_pcm

            pcm = await cache.get(req.text, voice, lambda t, v: asyncio.to_thread(tts_to_pcm, t, voice=v))
            return [lambda: ArraySource(pcm, loop=1)]

        self._start_playback(call, playback, streams, sources, req.mix)

    def _start_playback(self, call: Call, playback: _Playback, streams: list[Any],
                        make: Callable[[], Awaitable[list[Callable[[], Any]]]], mix: bool) -> None:
        call.playbacks.setdefault(playback.kind, []).append(playback)

        async def run() -> None:
            try:
                factories = await make()
                first = True
                while not playback.stopped:
                    for factory in factories:
                        if playback.stopped:
                            break
                        futures = []
                        # Sources decode files when made: keep that off the event loop, and
                        # make them all before starting any, so both legs start together.
                        made = [(stream, await asyncio.to_thread(factory))
                                for stream in streams if not stream.closed]
                        for stream, source in made:
                            if playback.stopped or stream.closed:
                                with contextlib.suppress(Exception):
                                    source.close()
                                continue
                            if first and not mix:
                                stream.stop_play()  # mix=false: the leg hears only this
                            # mix=true: summed into what the leg hears (prompt, bridged
                            # audio, silence) without cutting or delaying it.
                            futures.append(
                                stream.play(_PlaybackSource(source, playback), mix=mix)
                            )
                        if not futures:  # every leg is gone
                            break
                        first = False
                        if futures:
                            await asyncio.gather(*futures, return_exceptions=True)
                    if not playback.loop:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("call %s: %s failed: %s", call.call_uuid, playback.kind, exc)
            finally:
                playback.stop()
                with contextlib.suppress(ValueError):
                    call.playbacks.get(playback.kind, []).remove(playback)

        playback.task = self._spawn(run(), f"{playback.kind}-{call.call_uuid}")

    def stop_playback(self, call: Call, kind: str) -> int:
        """Stop the Play (``kind='play'``) or Speak playbacks the API started; how many."""
        items = list(call.playbacks.get(kind, []))
        for playback in items:
            playback.stop()
        return len(items)

    def send_dtmf(self, call: Call, steps: Sequence[DtmfStep], leg: str = "aleg") -> None:
        """Send the digit ``steps`` the dialect parsed (with the server's default tone
        length) on the A or B leg (RFC 4733 events or in-band tones)."""
        (stream,) = self.media_legs(call, leg)

        async def send() -> None:
            try:
                await stream.send_digits(list(steps))
            except Exception as exc:
                log.warning("call %s: DTMF failed: %s", call.call_uuid, exc)

        self._spawn(send(), f"dtmf-{call.call_uuid}")

    def start_recording(self, call: Call, req: RecordOrder, api_id: str) -> tuple[str, str]:
        """Start recording the call; return ``(recording_id, url)``."""
        from media.record import Recorder, RecorderError

        (stream,) = self.media_legs(call, "aleg")
        if req.transcription_requested:
            log.info("call %s: transcription requested; not available, recording only", call.call_uuid)
        recording_id = str(uuid.uuid4())
        # A dialect may name the file (the legacy FileName); else the recording id.
        name = f"{getattr(req, 'file_name', None) or recording_id}.{req.file_format}"
        if self.recording_in_progress(name):
            raise OperationFailed(f"cannot record: {name} is being recorded")
        path = self.m.recording_path(name, call.account.auth_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            recorder = Recorder(path, req.file_format)
        except (RecorderError, ValueError, OSError) as exc:
            raise OperationFailed(f"cannot record: {exc}") from None
        url = self.m.recording_url(call, name)
        rec = _CallRecording(recording_id, url, name, recorder, stream, req, api_id)
        call.recordings[recording_id] = rec
        rec.start()
        loop = asyncio.get_running_loop()
        rec.timer = loop.call_later(req.time_limit, lambda: self._finish_recording(call, rec))
        return recording_id, url

    def stop_recording(self, call: Call, url: str | None = None) -> int:
        """Stop the call's API recordings (only the one at ``url`` if given); how many."""
        bare = None if url is None else url.split("?", 1)[0]  # signed or not, the same file
        recs = [r for r in call.recordings.values() if url is None or r.url.split("?", 1)[0] == bare or r.name == url]
        for rec in recs:
            self._finish_recording(call, rec)
        return len(recs)

    def recording_in_progress(self, name: str) -> bool:
        """True while an API recording is still being written to ``name``."""
        return any(name in {r.name for r in c.recordings.values()} for c in self.m.calls.values())

    def _finish_recording(self, call: Call, rec: _CallRecording) -> None:
        if call.recordings.pop(rec.recording_id, None) is None:
            return
        result = rec.stop()
        if rec.req.callback_url:
            done = {"api_id": rec.api_id, "url": rec.url, "recording_id": rec.recording_id, **result}
            params = call.dialect.recording_params(call, done)
            self.m.post_callback(call, "record", rec.req.callback_url, rec.req.callback_method, params)

    def end(self, call: Call) -> None:
        """The call ended: stop the API's playbacks and finish its recordings (callbacks sent)."""
        for kind in list(call.playbacks):
            self.stop_playback(call, kind)
        for rec in list(call.recordings.values()):
            try:
                self._finish_recording(call, rec)
            except Exception:
                log.exception("call %s: could not finish recording %s", call.call_uuid, rec.recording_id)


class _Playback:
    """One API Play/Speak: a stop flag and a sample budget shared by the items it queues."""

    def __init__(self, kind: str, length_s: int | None, loop: bool) -> None:
        self.kind = kind
        self.loop = loop
        self.budget = None if length_s is None else int(length_s) * 8000
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.stopped = True


class _PlaybackSource:
    """A ``media.play`` source that ends early when its :class:`_Playback` is stopped or its
    ``length`` is used up, so stopping the API's audio never touches what the XML plays."""

    def __init__(self, inner: Any, playback: _Playback) -> None:
        self._inner = inner
        self._playback = playback

    def read(self, n: int = 160) -> np.ndarray | None:
        pb = self._playback
        if pb.stopped:
            return None
        if pb.budget is not None:
            if pb.budget <= 0:
                pb.stop()
                return None
            n = min(n, pb.budget)
        frame = self._inner.read(n)
        if frame is not None and pb.budget is not None:
            pb.budget -= len(frame)
        return frame

    def close(self) -> None:
        closer = getattr(self._inner, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()


class _CallRecording:
    """An API recording: both directions of the A leg mixed into one mono file.

    The media clock hands us each received frame (receive tap) and each sent frame (send
    tap) of a 20 ms tick; frames are paired in order and summed with saturation. A side
    that stays silent (no media yet, or no send tick) is filled with silence after
    :data:`_LAG_FRAMES` frames so the other side is never held back.
    """

    _LAG_FRAMES = 10

    def __init__(self, recording_id: str, url: str, name: str, recorder: Any, stream: Any,
                 req: RecordOrder, api_id: str) -> None:
        self.recording_id = recording_id
        self.url = url
        self.name = name
        self.recorder = recorder
        self.stream = stream
        self.req = req
        self.api_id = api_id
        self.timer: asyncio.TimerHandle | None = None
        self._rx: deque[np.ndarray] = deque()
        self._tx: deque[np.ndarray] = deque()
        self._failed = False
        self.start_ms = 0
        self.end_ms = 0

    def start(self) -> None:
        self.start_ms = int(time.time() * 1000)
        self.stream.add_tap(self._on_rx)
        self.stream.add_send_tap(self._on_tx)

    def _on_rx(self, frame: np.ndarray) -> None:
        self._rx.append(np.array(frame, dtype=np.int16, copy=True))
        self._drain()

    def _on_tx(self, frame: np.ndarray) -> None:
        self._tx.append(np.array(frame, dtype=np.int16, copy=True))
        self._drain()

    def _write(self, a: np.ndarray | None, b: np.ndarray | None) -> None:
        if self._failed or self.recorder.closed:
            return
        if a is None or b is None:
            frame = a if b is None else b
        else:
            n = min(len(a), len(b))
            frame = np.clip(a[:n].astype(np.int32) + b[:n].astype(np.int32), -32768, 32767).astype(np.int16)
        try:
            self.recorder.write(frame)
        except Exception as exc:  # disk full: stop writing, keep the call
            self._failed = True
            log.warning("recording %s failed: %s", self.recording_id, exc)

    def _drain(self, flush: bool = False) -> None:
        rx, tx = self._rx, self._tx
        while rx and tx:
            self._write(rx.popleft(), tx.popleft())
        while rx and (flush or len(rx) > self._LAG_FRAMES):
            self._write(rx.popleft(), None)
        while tx and (flush or len(tx) > self._LAG_FRAMES):
            self._write(None, tx.popleft())

    def stop(self) -> dict[str, int]:
        if self.timer is not None:
            self.timer.cancel()
        self.stream.remove_tap(self._on_rx)
        self.stream.remove_send_tap(self._on_tx)
        self._drain(flush=True)
        self.end_ms = int(time.time() * 1000)
        try:
            self.recorder.close()
        except Exception as exc:
            log.warning("recording %s: closing failed: %s", self.recording_id, exc)
        rate = getattr(self.recorder, "rate", 8000) or 8000
        duration_ms = round(self.recorder.samples * 1000 / rate)
        return {"duration_ms": duration_ms, "start_ms": self.start_ms, "end_ms": self.end_ms}

