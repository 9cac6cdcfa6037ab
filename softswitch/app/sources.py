"""Where the application executor's audio comes from: prompts made by :mod:`media.play`
(:class:`MediaFactory`), speech synthesized once per text and voice (:class:`TtsCache`,
espeak-ng voices from a verb's voice and language) and ``<Play>`` files downloaded once
(:class:`MediaCache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import logging
import os
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from softswitch.app.document import CAUSE_FETCH_FAILED, XmlAppError
from softswitch.netpolicy import default_policy, denied_reason, fetching

log = logging.getLogger(__name__)

__all__ = [
    "SHARED_TTS_CACHE",
    "MediaCache",
    "MediaFactory",
    "PlayModuleMedia",
    "TtsCache",
    "espeak_voice",
]


class MediaFactory(Protocol):
    """Makes ``media.play`` sources. The default uses :mod:`media.play`; tests inject one."""

    def silence(self, duration_ms: int) -> Any: ...

    def tone(self, freqs_hz: Sequence[float], duration_ms: int, level_dbm0: float) -> Any: ...

    def pcm(self, samples: Any) -> Any:
        """A source over PCM from :meth:`tts` (cheap: wraps the array, no decoding)."""
        ...

    def file(self, path: str) -> Any:
        """A source for a local audio file. May block for a while (it may decode the whole
        file up front): the executor calls it in a worker thread, never on the loop."""
        ...

    async def tts(self, text: str, voice: str) -> Any:
        """Synthesize ``text`` with espeak-ng ``voice``; returns PCM for :meth:`pcm`."""
        ...


class PlayModuleMedia:
    """:class:`MediaFactory` over ``media.play`` (imported on first use)."""

    @staticmethod
    def _mod() -> Any:
        # Imported on first use: media.play is optional until a call really plays something.
        return importlib.import_module("media.play")

    def silence(self, duration_ms: int) -> Any:
        return self._mod().SilenceSource(duration_ms)

    def tone(self, freqs_hz: Sequence[float], duration_ms: int, level_dbm0: float) -> Any:
        return self._mod().ToneSource(tuple(freqs_hz), duration_ms, level_dbm0)

    def pcm(self, samples: Any) -> Any:
        return self._mod().ArraySource(samples, loop=1)

    def file(self, path: str) -> Any:
        return self._mod().FileSource(path, loop=1)

    async def tts(self, text: str, voice: str) -> Any:
        # espeak-ng is a subprocess: keep it off the event loop.
        return await asyncio.to_thread(self._mod().tts_to_pcm, text, voice=voice)


# --- text to speech -------------------------------------------------------------------------

# espeak-ng voices (``espeak-ng --voices``) that the Speak verb's languages map onto.
_ESPEAK_LANGS = {
    "af", "am", "ar", "bg", "bn", "bs", "ca", "cmn", "cs", "cy", "da", "de", "el", "en-029",
    "en-gb", "en-gb-scotland", "en-us", "eo", "es", "es-419", "et", "eu", "fa", "fi", "fr-be",
    "fr-ch", "fr-fr", "ga", "gd", "gu", "he", "hi", "hr", "hu", "hy", "id", "is", "it", "ja",
    "ka", "kk", "kn", "ko", "lt", "lv", "mk", "ml", "mr", "ms", "mt", "nb", "ne", "nl", "pa",
    "pl", "pt", "pt-br", "ro", "ru", "sk", "sl", "sq", "sr", "sv", "sw", "ta", "te", "th", "tr",
    "uk", "ur", "vi", "yue",
}  # fmt: skip
_LANG_ALIASES = {
    "en": "en-us", "en-au": "en-gb", "en-in": "en-gb", "en-nz": "en-gb", "en-za": "en-gb",
    "en-ie": "en-gb", "en-gb-wls": "en-gb", "en-ca": "en-us", "fr": "fr-fr", "fr-ca": "fr-fr",
    "es-us": "es-419", "es-mx": "es-419", "pt-pt": "pt", "zh": "cmn", "zh-cn": "cmn",
    "cmn-cn": "cmn", "zh-tw": "cmn", "zh-hk": "yue", "yue-cn": "yue", "arb": "ar", "no": "nb",
    "nb-no": "nb", "he-il": "he", "iw": "he",
}  # fmt: skip
_MALE_VOICES = {"MAN", "rms", "awb", "kal"}


def espeak_voice(voice: str, language: str) -> str:
    """Map a Speak verb's ``voice``/``language`` to an espeak-ng voice name (``en-us+f3``).

    The language tag picks the espeak-ng language (``en-GB`` → ``en-gb``, ``es-US`` →
    ``es-419``; a tag espeak-ng lacks falls back to its primary subtag, then to ``en-us``);
    ``WOMAN``/``MAN`` pick the female/male variant. Polly voices have no espeak-ng twin: the
    language decides and the female variant is used (the default voice is WOMAN).
    """
    tag = language.lower()
    lang = _LANG_ALIASES.get(tag, tag)
    if lang not in _ESPEAK_LANGS:
        primary = tag.split("-", 1)[0]
        lang = _LANG_ALIASES.get(primary, primary)
        if lang not in _ESPEAK_LANGS:
            log.warning("no espeak-ng voice for language %r, speaking en-us", language)
            lang = "en-us"
    variant = "m3" if voice in _MALE_VOICES else "f3"
    return f"{lang}+{variant}"


class TtsCache:
    """Synthesized speech per (text, espeak voice), shared by every call of the process.

    Bounded LRU; concurrent requests for the same text share one synthesis.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._max = max_entries
        self._done: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._done)

    async def get(self, text: str, voice: str, synth: Callable[[str, str], Awaitable[Any]]) -> Any:
        key = (text, voice)
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            pcm = await synth(text, voice)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._pending.pop(key, None)
        fut.set_result(pcm)
        self._done[key] = pcm
        while len(self._done) > self._max:
            self._done.popitem(last=False)
        return pcm


#: The process-wide cache an executor uses when it is not given one.
SHARED_TTS_CACHE = TtsCache()


# --- media files ------------------------------------------------------------------------------


def _sniff_audio(head: bytes) -> str | None:
    """``wav`` or ``mp3`` from the first bytes (RIFF/WAVE header; ID3 tag or MPEG sync)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


_AUDIO_TYPES = {
    "audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/x-mpeg-3", "audio/wav", "audio/x-wav",
    "audio/wave", "audio/vnd.wave", "application/octet-stream", "binary/octet-stream",
}  # fmt: skip


class MediaCache:
    """Downloads ``<Play>`` URLs once into ``cache_dir`` (size-bounded, type-checked).

    The file is kept under a name derived from the URL, so later calls play it without a
    fetch; ``file://`` URLs and absolute paths are played in place when they lie under one
    of ``allowed_dirs`` (XML comes from the user's server and must not read arbitrary
    files of ours).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        allowed_dirs: Sequence[str | os.PathLike[str]] = (),
        max_bytes: int = 20 * 1024 * 1024,
        timeout_s: float = 30.0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.allowed_dirs = tuple(Path(d).resolve() for d in allowed_dirs)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def path_for(self, url: str) -> str:
        """Local path of a playable WAV/MP3 for ``url``. Raises XmlAppError."""
        parts = urlsplit(url)
        if parts.scheme.lower() in ("http", "https"):
            return await self._download(url)
        local = Path(unquote(parts.path) if parts.scheme.lower() == "file" else url).resolve()
        if not any(local.is_relative_to(d) for d in self.allowed_dirs):
            raise XmlAppError(f"{url!r} is outside the allowed media directories", element="Play")
        if not local.is_file():
            raise XmlAppError(f"no such file {url!r}", element="Play")
        return str(local)

    async def _download(self, url: str) -> str:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
        for ext in ("wav", "mp3"):
            cached = self.cache_dir / f"{digest}.{ext}"
            if cached.is_file():
                return str(cached)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            for ext in ("wav", "mp3"):
                cached = self.cache_dir / f"{digest}.{ext}"
                if cached.is_file():
                    return str(cached)
            return await self._fetch_to(url, digest)

    async def _fetch_to(self, url: str, digest: str) -> str:
        import aiohttp  # noqa: PLC0415 - keep module import light

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{digest}.{uuid.uuid4().hex}.part"
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            # softswitch.netpolicy: the audio URL comes from the user's XML.
            policy = default_policy()
            with fetching(policy, url) as headers:
                async with aiohttp.ClientSession(
                    timeout=timeout, connector=policy.connector()
                ) as session, session.get(url, headers=headers) as resp:
                        if resp.status != 200:
                            raise XmlAppError(
                                f"fetching {url} answered HTTP {resp.status}", element="Play"
                            )
                        ctype = resp.content_type.lower()
                        if ctype not in _AUDIO_TYPES:
                            raise XmlAppError(
                                f"{url} has content type {ctype!r}, expected WAV or MP3 audio",
                                element="Play",
                            )
                        if (resp.content_length or 0) > self.max_bytes:
                            raise XmlAppError(
                                f"{url} is larger than {self.max_bytes} bytes", element="Play"
                            )
                        size = 0
                        head = b""
                        with open(tmp, "wb") as out:
                            async for chunk in resp.content.iter_chunked(64 * 1024):
                                size += len(chunk)
                                if size > self.max_bytes:
                                    raise XmlAppError(
                                        f"{url} is larger than {self.max_bytes} bytes", element="Play"
                                    )
                                if len(head) < 16:
                                    head += chunk[:16]
                                out.write(chunk)
            kind = _sniff_audio(head)
            if kind is None:
                raise XmlAppError(f"{url} is neither WAV nor MP3", element="Play")
            final = self.cache_dir / f"{digest}.{kind}"
            os.replace(tmp, final)
            return str(final)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise XmlAppError(
                f"fetching {url} failed: {denied_reason(exc) or exc or type(exc).__name__}",
                element="Play",
                cause=CAUSE_FETCH_FAILED,
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
