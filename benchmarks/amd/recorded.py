"""An answering-machine-detection corpus of *recorded* voices in real rooms and on real lines,
built from Debian packages (``python benchmarks/amd/corpus.py --recordings OUTDIR``).

Sources (installed by ``scripts/install-peers``; nothing is downloaded or committed):

* speech: the Asterisk prompt sets recorded by people, ``asterisk-core-sounds-{es,fr,it,ru}-wav``
  (``/usr/share/asterisk/sounds/<voice>/``: Allison in Mexican Spanish, June in
  Canadian French, Carlo in Italian, IvrvoiceRU in Russian), 8 kHz 16-bit;
* music: ``asterisk-moh-opsound-wav`` (``/usr/share/asterisk/moh/``).

Each clip is what softswitch hears after the answer, 8 kHz mono 16-bit WAV, labelled like the
espeak corpus (``labels.csv``: ``file, class, has_beep, greeting_end_ms, beep_onset_ms`` and
descriptive columns) plus ``room``, ``line`` and ``coded=1`` (the line's G.711 coding is already
applied, so ``evaluate.py`` does not code it again).

* ``human`` answers, composed from short recorded words: ``short`` (one word: "hello", a digit,
  "yes"...), ``two`` (two words 0.2–0.5 s apart), ``hesitation`` (a short word, a pause, a word),
  ``repeat`` (a word, 1.2–2 s of silence, the word again: a second "hello?"), ``late`` (2–3.5 s
  of silence first);
* ``machine`` greetings, composed from recorded prompts: ``voicemail`` (an opening and a
  "leave your message after the tone" prompt, then the package's beep or a synthetic one),
  ``voicemail-nobeep``, ``ivr`` (two menu prompts), ``carrier`` (an intercept message:
  "the number you have dialed is not in service", "all circuits are busy"...), ``hello-reached``
  (a "hello" word, a pause, then a prompt: the greeting that opens like a person).

Rooms: ``quiet`` (line noise only), ``pink`` and ``brown`` noise at 20 and 10 dB SNR,
``babble`` (four to six other recordings, other voices, at 15 and 10 dB under the talker),
``music`` (on-hold music at 15 and 10 dB). Line: µ-law or A-law, packet loss 0–5 % (lost
frames are silence, as the media engine gives its taps), talker level −10 to −35 dBm0.
"""

from __future__ import annotations

import csv
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from media import g711

RATE = 8000
SOUNDS = Path("/usr/share/asterisk/sounds")
MOH = Path("/usr/share/asterisk/moh")
VOICES = ["es_MX_f_Allison", "fr_CA_f_June", "it_IT_m_Carlo", "ru_RU_f_IvrvoiceRU"]
_DBM0 = 32768 * 10 ** (-3.14 / 20)  # peak of a 0 dBm0 sine in G.711

# Prompt names (present in every voice set listed above) by use.
GREETING_OPEN = ["vm-nobodyavail", "vm-isunavail", "vm-theperson"]
GREETING_CLOSE = ["vm-intro", "vm-rec-name"]
CARRIER = [
    "ss-noservice",
    "cannot-complete-as-dialed",
    "all-circuits-busy-now",
    "number-not-answering",
    "please-try-again",
    "im-sorry",
]
HELLO = ["hello", "yes", "hi"]

ROOMS = [
    "quiet",
    "pink20",
    "pink10",
    "brown20",
    "brown10",
    "babble15",
    "babble10",
    "music15",
    "music10",
]
HUMAN_KINDS = ["short", "two", "hesitation", "repeat", "late"]
MACHINE_KINDS = ["voicemail", "voicemail-nobeep", "ivr", "carrier", "hello-reached"]


def available() -> list[str]:
    """The voice sets installed here (empty: install the asterisk-core-sounds packages)."""
    return [v for v in VOICES if (SOUNDS / v / "vm-intro.wav").exists()]


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: not 8 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def _trim(x: np.ndarray) -> np.ndarray:
    """Cut the silence a prompt file starts and ends with (frames 35 dB under its loudest)."""
    n = x.size // 160
    if n == 0:
        return x
    e = (x[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    keep = np.flatnonzero(e > e.max() * 10 ** (-35 / 10))
    if keep.size == 0:
        return x
    return x[keep[0] * 160 : (keep[-1] + 1) * 160]


def _active_rms(x: np.ndarray) -> float:
    """RMS over the frames with speech (within 25 dB of the loudest), the level SNRs refer to."""
    n = x.size // 160
    e = (x[: n * 160].reshape(n, 160) ** 2).mean(axis=1)
    act = e[e > e.max() * 10 ** (-25 / 10)] if n else np.array([1.0])
    return float(np.sqrt(act.mean())) if act.size else 1.0


@dataclass
class Pools:
    words: dict[str, list[np.ndarray]]  # voice -> short words (0.25–1.2 s)
    hellos: dict[str, list[np.ndarray]]
    prompts: dict[str, dict[str, np.ndarray]]  # voice -> name -> prompt
    long_prompts: dict[str, list[np.ndarray]]  # voice -> prompts of 1.5–6 s (IVR, babble)
    beep: np.ndarray | None
    music: list[np.ndarray]


def load_pools(voices: list[str]) -> Pools:
    words: dict[str, list[np.ndarray]] = {}
    hellos: dict[str, list[np.ndarray]] = {}
    prompts: dict[str, dict[str, np.ndarray]] = {}
    long_prompts: dict[str, list[np.ndarray]] = {}
    for v in voices:
        d = SOUNDS / v
        words[v] = []
        for f in sorted((d / "digits").glob("*.wav"))[:40] + sorted(d.glob("*.wav")):
            x = _trim(_read(f))
            if 0.25 * RATE <= x.size <= 1.2 * RATE:
                words[v].append(x)
        hellos[v] = [
            _trim(_read(d / f"{h}.wav")) for h in HELLO if (d / f"{h}.wav").exists()
        ] or words[v][:3]
        prompts[v] = {
            name: _trim(_read(d / f"{name}.wav"))
            for name in GREETING_OPEN + GREETING_CLOSE + CARRIER
            if (d / f"{name}.wav").exists()
        }
        long_prompts[v] = []
        for f in sorted(d.glob("*.wav")):
            x = _trim(_read(f))
            if 1.5 * RATE <= x.size <= 6 * RATE:
                long_prompts[v].append(x)
    beep_file = SOUNDS / "es_MX_f_Allison" / "beep.wav"
    beep = _trim(_read(beep_file)) if beep_file.exists() else None
    music = [_read(f) for f in sorted(MOH.glob("*.wav"))] if MOH.exists() else []
    return Pools(words, hellos, prompts, long_prompts, beep, music)


def _sil(ms: float) -> np.ndarray:
    return np.zeros(int(RATE * ms / 1000))


def _tone(hz: float, ms: float) -> np.ndarray:
    n = np.arange(int(RATE * ms / 1000))
    return 8000.0 * np.sin(2 * np.pi * hz * n / RATE)


@dataclass
class Clip:
    cls: str
    kind: str
    voice: str
    room: str
    line: str
    pcm: np.ndarray
    greeting_end_ms: int | None
    beep_onset_ms: int | None
    beep_ms: int | None
    beep_hz: float | None


def compose(
    rng: np.random.Generator, pools: Pools, cls: str, kind: str, voice: str
) -> tuple[np.ndarray, int, int | None, int | None, float | None]:
    """The talker's signal (before room and line), greeting end, beep onset/length/Hz (ms)."""
    words, hellos, prompts = pools.words[voice], pools.hellos[voice], pools.prompts[voice]

    def pick(lst: list[np.ndarray]) -> np.ndarray:
        return lst[int(rng.integers(len(lst)))]

    lead = _sil(rng.uniform(200, 1200))
    beep_onset = beep_ms = None
    beep_hz = None
    if cls == "human":
        if kind == "short":
            parts = [lead, pick(hellos + words)]
        elif kind == "two":
            parts = [lead, pick(hellos), _sil(rng.uniform(200, 500)), pick(words)]
        elif kind == "hesitation":
            short = [w for w in words if w.size <= 0.45 * RATE] or words
            parts = [lead, pick(short), _sil(rng.uniform(400, 700)), pick(hellos + words)]
        elif kind == "repeat":
            h = pick(hellos)
            parts = [lead, h, _sil(rng.uniform(1200, 2000)), h]
        elif kind == "late":
            parts = [_sil(rng.uniform(2000, 3500)), pick(hellos + words)]
        else:
            raise ValueError(kind)
        # The greeting ends where the first long silence starts: a person's "hello?" then waits.
        end = sum(p.size for p in parts[: 2 if kind == "repeat" else len(parts)])
        x = np.concatenate([*parts, _sil(6000)])
        return x, int(end * 1000 / RATE), None, None, None
    opening = [lead]
    if kind == "hello-reached":
        opening += [pick(hellos), _sil(rng.uniform(250, 500))]
    if kind in ("voicemail", "voicemail-nobeep", "hello-reached"):
        names = [n for n in GREETING_OPEN if n in prompts]
        body = [prompts[names[int(rng.integers(len(names)))]]]
        if kind != "hello-reached" or rng.random() < 0.5:
            close = [n for n in GREETING_CLOSE if n in prompts]
            body += [_sil(rng.uniform(150, 600)), prompts[close[int(rng.integers(len(close)))]]]
    elif kind == "ivr":
        body = [
            pick(pools.long_prompts[voice]),
            _sil(rng.uniform(200, 700)),
            pick(pools.long_prompts[voice]),
        ]
    elif kind == "carrier":
        names = [n for n in CARRIER if n in prompts]
        body = [prompts[names[int(rng.integers(len(names)))]]]
        body += [_sil(rng.uniform(200, 500)), prompts[names[int(rng.integers(len(names)))]]]
    else:
        raise ValueError(kind)
    parts = opening + body
    end = sum(p.size for p in parts)
    if kind == "voicemail":
        gap = _sil(rng.uniform(200, 800))
        if pools.beep is not None and rng.random() < 0.5:
            beep = pools.beep
            beep_hz = 1000.0  # the Asterisk prompt set's beep
        else:
            beep_hz = float(rng.choice([440, 800, 1000, 1400]))
            beep = _tone(beep_hz, rng.uniform(200, 700))
        beep_onset = int((end + gap.size) * 1000 / RATE)
        beep_ms = int(beep.size * 1000 / RATE)
        parts += [gap, beep]
    x = np.concatenate([*parts, _sil(4000)])
    return x, int(end * 1000 / RATE), beep_onset, beep_ms, beep_hz


def _noise(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    white = rng.normal(0.0, 1.0, n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / RATE)
    f[0] = f[1]
    spec = spec / np.sqrt(f) if kind == "pink" else spec / f
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-9)


def _babble(rng: np.random.Generator, pools: Pools, voice: str, n: int) -> np.ndarray:
    others = [v for v in pools.long_prompts if v != voice] or list(pools.long_prompts)
    out = np.zeros(n)
    for _ in range(int(rng.integers(4, 7))):
        v = others[int(rng.integers(len(others)))]
        src = pools.long_prompts[v]
        seq: list[np.ndarray] = []
        total = 0
        while total < n + RATE:
            p = src[int(rng.integers(len(src)))]
            seq += [p / (_active_rms(p) + 1e-9), _sil(rng.uniform(50, 300))]
            total += p.size + seq[-1].size
        s = np.concatenate(seq)
        start = int(rng.integers(0, max(1, s.size - n)))
        out += s[start : start + n]
    return out / (out.std() + 1e-9)


def _music(rng: np.random.Generator, pools: Pools, n: int) -> np.ndarray:
    m = pools.music[int(rng.integers(len(pools.music)))]
    start = int(rng.integers(0, max(1, m.size - n)))
    seg = np.resize(m[start:], n)
    return seg / (seg.std() + 1e-9)


def room_and_line(
    rng: np.random.Generator, pools: Pools, x: np.ndarray, voice: str, room: str
) -> tuple[np.ndarray, str]:
    """Add the room around the talker, then the line: level, G.711 law, packet loss."""
    level = float(rng.uniform(-35.0, -10.0))
    talker_rms = _DBM0 / np.sqrt(2) * 10 ** (level / 20)
    y = x * (talker_rms / (_active_rms(x) + 1e-9))
    snr = float(room[-2:]) if room[-2:].isdigit() else None
    if room.startswith(("pink", "brown")):
        bg = _noise(rng, room[:-2], y.size)
    elif room.startswith("babble"):
        bg = _babble(rng, pools, voice, y.size)
    elif room.startswith("music") and pools.music:
        bg = _music(rng, pools, y.size)
    else:
        bg = None
    if bg is not None and snr is not None:
        y = y + bg * talker_rms * 10 ** (-snr / 20)
    y = y + rng.normal(0.0, _DBM0 / np.sqrt(2) * 10 ** (-70 / 20), y.size)  # line noise
    law = "alaw" if rng.random() < 0.5 else "ulaw"
    pcm = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    enc, dec = (
        (g711.alaw_encode, g711.alaw_decode)
        if law == "alaw"
        else (g711.ulaw_encode, g711.ulaw_decode)
    )
    pcm = np.asarray(dec(enc(pcm)), dtype=np.int16)
    loss = float(rng.choice([0.0, 0.0, 0.01, 0.03, 0.05]))
    if loss:
        frames = pcm[: pcm.size // 160 * 160].reshape(-1, 160).copy()
        frames[rng.random(frames.shape[0]) < loss] = 0
        pcm = frames.reshape(-1)
    return pcm, f"{law} {level:.0f}dBm0 loss{loss:.0%}"


def build(out: Path, count: int, seed: int, progress: bool = True) -> list[dict[str, object]]:
    voices = available()
    if not voices:
        raise SystemExit(
            f"no recorded voices under {SOUNDS}: install asterisk-core-sounds-es-wav, -fr-wav, "
            "-it-wav, -ru-wav and asterisk-moh-opsound-wav (scripts/install-peers does)"
        )
    pools = load_pools(voices)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    from tqdm import tqdm

    for i in tqdm(range(count), unit="clip", disable=not progress, desc="recorded corpus"):
        cls = "human" if i % 2 == 0 else "machine"
        kinds = HUMAN_KINDS if cls == "human" else MACHINE_KINDS
        kind = kinds[(i // 2) % len(kinds)]
        room = ROOMS[(i // (2 * len(kinds))) % len(ROOMS)]
        voice = voices[int(rng.integers(len(voices)))]
        x, greeting_end, beep_onset, beep_ms, beep_hz = compose(rng, pools, cls, kind, voice)
        pcm, line = room_and_line(rng, pools, x, voice, room)
        name = f"{i:04d}_{cls}_{kind}.wav"
        with wave.open(str(out / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.astype("<i2").tobytes())
        rows.append(
            {
                "file": name,
                "class": cls,
                "has_beep": int(beep_onset is not None),
                "greeting_end_ms": greeting_end,
                "beep_onset_ms": "" if beep_onset is None else beep_onset,
                "kind": kind,
                "voice": voice,
                "room": room,
                "line": line,
                "coded": 1,
                "beep_hz": "" if beep_hz is None else int(beep_hz),
                "beep_ms": "" if beep_ms is None else beep_ms,
            }
        )
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
