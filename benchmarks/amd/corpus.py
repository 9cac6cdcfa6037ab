"""Build a labelled answering-machine-detection corpus offline (espeak-ng + sox), deterministically.

Each clip is what the softswitch hears after the answer, 8 kHz mono 16-bit WAV:

* ``human``: a short answer ("Hello?", "Yes?", "Hi, this is Mark.", "Hello, who's calling?"...,
  or "Hello? ... Hello?" with a pause) after a short initial silence, then silence or
  background noise while the person waits;
* ``machine``: a voicemail greeting (one or two sentences; some with a pause between them),
  with or without a beep (440..1900 Hz, 150..1000 ms) at the end, then the line stays open;
* ``silence``: nothing but silence or line noise.

Voices and languages vary (en-us, en-gb, en variants with female/male voices, de, fr, es, it,
pt), so do speaking rate, pitch, level and noise (none, white, pink at 12..35 dB SNR). Speech is
band-limited to telephone band (300-3400 Hz) and resampled to 8 kHz by sox.

``labels.csv`` columns: ``file, class, has_beep, greeting_end_ms, beep_onset_ms`` (empty when not
applicable) followed by descriptive columns (kind, voice, text, speed, pitch, noise, snr_db,
beep_hz, beep_ms, greeting_start_ms). Times are ms from the start of the clip (= the answer).

Usage::

    python benchmarks/amd/corpus.py [OUTDIR] [--count 200] [--seed 1] [--jobs 2]
    python benchmarks/amd/corpus.py --recordings OUTDIR [--count 450]   # recorded voices

``--recordings`` builds the second corpus, of people's recordings in rooms and on lines
(``benchmarks/amd/recorded.py`` says how).

OUTDIR defaults to ``benchmarks/amd/corpus/`` (git-ignored). The same seed and count give the
same corpus (espeak-ng and sox are deterministic; sox noise is generated with ``-R``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATE = 8000
DEFAULT_OUT = Path(__file__).resolve().parent / "corpus"

# (espeak-ng voice, language key)
VOICES: list[tuple[str, str]] = [
    ("en-us", "en"),
    ("en-gb", "en"),
    ("en+f3", "en"),
    ("en+m3", "en"),
    ("en-us+f2", "en"),
    ("en-gb+f4", "en"),
    ("en-us+m7", "en"),
    ("de", "de"),
    ("de+f2", "de"),
    ("fr", "fr"),
    ("fr+m4", "fr"),
    ("es", "es"),
    ("es+f3", "es"),
    ("it", "it"),
    ("pt", "pt"),
]

HUMAN_TEXTS: dict[str, list[str]] = {
    "en": [
        "Hello?",
        "Yes?",
        "Hi, this is Mark.",
        "Hello, who's calling?",
        "Hello, Mark speaking.",
        "Yeah?",
        "Hi there.",
        "Good morning.",
        "Speaking.",
        "Hello, Sarah here.",
    ],
    "de": ["Hallo?", "Ja, bitte?", "Müller?", "Guten Tag.", "Ja, hallo?"],
    "fr": ["Allô?", "Oui?", "Bonjour?", "Allô, oui?", "Oui, j'écoute."],
    "es": ["¿Diga?", "¿Sí?", "Hola, ¿quién es?", "¿Bueno?", "¿Dígame?"],
    "it": ["Pronto?", "Sì?", "Pronto, chi parla?"],
    "pt": ["Alô?", "Sim?", "Olá, quem fala?"],
}

# Voicemail greetings as sentences; a "mid-pause" greeting puts a pause between two sentences.
MACHINE_TEXTS: dict[str, list[list[str]]] = {
    "en": [
        [
            "Hi, you've reached John.",
            "I can't take your call right now, please leave a message after the beep.",
        ],
        [
            "You have reached the voicemail of Sarah Miller.",
            "Please leave your name and number and I will call you back.",
        ],
        [
            "Hello, you've reached the Johnson residence.",
            "We're not available right now. Leave a message after the tone.",
        ],
        [
            "Thank you for calling Acme Plumbing.",
            "Our office is currently closed. Please leave a message and we will return your call.",
        ],
        [
            "The person you are calling is not available.",
            "At the tone, please record your message. When you are finished, hang up.",
        ],
        ["Hey, it's Mike.", "Sorry I missed you, leave a message and I'll get back to you."],
        [
            "Hi, this is Anna Lee at Northwind Traders.",
            "I'm away from my desk, please leave a detailed message.",
        ],
        [
            "Your call has been forwarded to an automatic voice message system.",
            "Please record your message after the tone.",
        ],
    ],
    "de": [
        [
            "Hallo, hier ist der Anrufbeantworter von Thomas Müller.",
            "Ich bin gerade nicht erreichbar. Bitte hinterlassen Sie eine Nachricht nach dem Signalton.",
        ],
        [
            "Guten Tag, Sie sind verbunden mit der Praxis Doktor Schneider.",
            "Unsere Praxis ist zurzeit geschlossen.",
        ],
    ],
    "fr": [
        [
            "Bonjour, vous êtes bien sur la messagerie de Claire Dubois.",
            "Je ne suis pas disponible, laissez-moi un message après le bip.",
        ],
        [
            "Vous êtes sur le répondeur de la société Martin.",
            "Nos bureaux sont fermés, merci de laisser un message.",
        ],
    ],
    "es": [
        [
            "Hola, has llamado a Carlos García.",
            "Ahora no puedo atenderte, deja tu mensaje después de la señal.",
        ],
        [
            "Bienvenido al buzón de voz de Ana López.",
            "Por favor, deje su nombre y su número y le llamaré.",
        ],
    ],
    "it": [
        [
            "Ciao, hai raggiunto la segreteria di Marco Rossi.",
            "Lascia un messaggio dopo il segnale acustico.",
        ]
    ],
    "pt": [
        [
            "Olá, você ligou para João Silva.",
            "No momento não posso atender, deixe sua mensagem após o sinal.",
        ]
    ],
}


@dataclass
class ClipSpec:
    """Everything needed to synthesise one clip; also its label row."""

    index: int
    cls: str
    kind: str
    voice: str = ""
    lang: str = ""
    segments: list[str] = field(default_factory=list)
    pauses_ms: list[int] = field(default_factory=list)  # after each segment but the last
    speed: int = 175
    pitch: int = 50
    initial_silence_ms: int = 0
    tail_ms: int = 3000
    level_dbfs: float = -20.0
    noise: str = "none"
    snr_db: float | None = None
    noise_dbfs: float | None = None
    has_beep: bool = False
    beep_gap_ms: int = 0
    beep_hz: int = 0
    beep_ms: int = 0
    beep_dbfs: float = -14.0

    @property
    def file(self) -> str:
        return f"{self.index:04d}_{self.cls}_{self.kind}.wav"


def plan(count: int, seed: int, snr: tuple[float, float] = (12.0, 35.0)) -> list[ClipSpec]:
    """Draw ``count`` clip specifications; a pure function of (count, seed, snr)."""
    rng = np.random.default_rng(seed)
    specs: list[ClipSpec] = []
    for i in range(count):
        r = float(rng.random())
        cls = "human" if r < 0.42 else ("machine" if r < 0.87 else "silence")
        voice, lang = VOICES[int(rng.integers(len(VOICES)))]
        noise = str(rng.choice(["none", "white", "pink"], p=[0.4, 0.3, 0.3]))
        spec = ClipSpec(index=i, cls=cls, kind=cls, voice=voice, lang=lang, noise=noise)
        spec.pitch = int(rng.integers(30, 71))
        spec.level_dbfs = float(rng.uniform(-28, -16))
        if noise != "none":
            spec.snr_db = float(rng.uniform(*snr))
        if cls == "human":
            texts = HUMAN_TEXTS[lang]
            text = texts[int(rng.integers(len(texts)))]
            spec.speed = int(rng.integers(150, 201))
            spec.initial_silence_ms = int(rng.integers(150, 1200))
            if rng.random() < 0.15:
                # "Hello? ... Hello?": the decision must come from the first pause.
                spec.kind = "repeat"
                spec.segments = [text, text]
                spec.pauses_ms = [int(rng.integers(1300, 2200))]
            else:
                spec.kind = "short"
                spec.segments = [text]
            spec.tail_ms = int(rng.integers(3000, 4500))
        elif cls == "machine":
            greeting = MACHINE_TEXTS[lang][int(rng.integers(len(MACHINE_TEXTS[lang])))]
            spec.speed = int(rng.integers(140, 191))
            spec.initial_silence_ms = int(rng.integers(200, 1800))
            if rng.random() < 0.3:
                spec.kind = "midpause"
                spec.segments = list(greeting)
                spec.pauses_ms = [int(rng.integers(300, 1300))]
            else:
                spec.kind = "greeting"
                spec.segments = [" ".join(greeting)]
            spec.has_beep = bool(rng.random() < 0.7)
            if spec.has_beep:
                spec.beep_gap_ms = int(rng.integers(150, 900))
                spec.beep_hz = int(rng.integers(440, 1901))
                spec.beep_ms = int(rng.integers(150, 1001))
                spec.beep_dbfs = float(rng.uniform(-24, -8))
            else:
                spec.kind += "-nobeep"
            spec.tail_ms = int(rng.integers(2000, 3500))
        else:
            spec.voice = spec.lang = ""
            spec.tail_ms = int(rng.integers(6000, 7500))
            if noise != "none":
                spec.noise_dbfs = float(rng.uniform(-65, -45))
            spec.snr_db = None
        specs.append(spec)
    return specs


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def _write_wav(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def _speak(text: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    """espeak-ng -> sox (telephone band, 8 kHz) -> samples trimmed to the speech."""
    raw = tmp / "tts.wav"
    tel = tmp / "tel.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "sox",
            "-R",
            str(raw),
            "-r",
            str(RATE),
            "-c",
            "1",
            "-b",
            "16",
            str(tel),
            "sinc",
            "300-3400",
        ],
        check=True,
        capture_output=True,
    )
    x = _read_wav(tel)
    # Trim espeak's leading/trailing silence so the labels are exact: 5 ms envelope.
    env = np.sqrt(np.convolve(x * x, np.ones(40) / 40, mode="same"))
    on = np.nonzero(env > 0.02 * env.max())[0]
    return x[on[0] : on[-1] + 1]


def _noise_bed(kind: str, cache: Path) -> np.ndarray:
    """120 s of white or pink noise through the same telephone band as the speech."""
    path = cache / f"{kind}noise-tel.wav"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.wav")
        subprocess.run(
            [
                "sox",
                "-R",
                "-n",
                "-r",
                str(RATE),
                "-c",
                "1",
                "-b",
                "16",
                str(tmp),
                "synth",
                "120",
                f"{kind}noise",
                "vol",
                "0.5",
                "sinc",
                "300-3400",
            ],
            check=True,
            capture_output=True,
        )
        tmp.replace(path)
    x = _read_wav(path)
    return x / np.sqrt(np.mean(x * x))  # unit RMS


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x * x) / 32768.0**2 + 1e-12)


def _active_rms_db(x: np.ndarray) -> float:
    """Speech level over its active 20 ms frames (ITU-T P.56 in spirit, simpler)."""
    n = x.size // 160
    fr = x[: n * 160].reshape(n, 160)
    e = np.mean(fr * fr, axis=1)
    act = e > e.max() * 10 ** (-35 / 10)
    return 10 * np.log10(np.mean(e[act]) / 32768.0**2 + 1e-12)


def render(spec: ClipSpec, out_dir: Path, noise_cache: Path, seed: int) -> dict[str, object]:
    """Synthesise one clip into ``out_dir`` and return its label row."""
    rng = np.random.default_rng([seed, spec.index, 7])
    ms = RATE // 1000
    parts: list[np.ndarray] = [np.zeros(spec.initial_silence_ms * ms)]
    greeting_start = greeting_end = None
    t = spec.initial_silence_ms * ms
    with tempfile.TemporaryDirectory(prefix="amdcorpus") as td:
        tmp = Path(td)
        speech = [_speak(s, spec.voice, spec.speed, spec.pitch, tmp) for s in spec.segments]
    if speech:
        gain_db = spec.level_dbfs - _active_rms_db(np.concatenate(speech))
        speech = [s * 10 ** (gain_db / 20) for s in speech]
    for k, seg in enumerate(speech):
        if greeting_start is None:
            greeting_start = t
        parts.append(seg)
        t += seg.size
        if k == 0 or spec.cls == "machine":
            # For a human repeating "Hello?", the greeting that counts ends with the first one.
            greeting_end = t
        if k < len(spec.pauses_ms):
            parts.append(np.zeros(spec.pauses_ms[k] * ms))
            t += spec.pauses_ms[k] * ms
    beep_onset = None
    if spec.has_beep:
        parts.append(np.zeros(spec.beep_gap_ms * ms))
        t += spec.beep_gap_ms * ms
        beep_onset = t
        n = spec.beep_ms * ms
        amp = np.sqrt(2) * 32768 * 10 ** (spec.beep_dbfs / 20)
        tt = np.arange(n) / RATE
        ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.004 * RATE))
        phase = float(rng.uniform(0, 2 * np.pi))
        parts.append(amp * ramp * np.sin(2 * np.pi * spec.beep_hz * tt + phase))
        t += n
    parts.append(np.zeros(spec.tail_ms * ms))
    x = np.concatenate(parts)
    if spec.noise != "none":
        bed = _noise_bed(spec.noise, noise_cache)
        off = int(rng.integers(0, bed.size - x.size))
        if spec.snr_db is not None:
            noise_db = spec.level_dbfs - spec.snr_db
        else:
            noise_db = float(spec.noise_dbfs if spec.noise_dbfs is not None else -60.0)
        x = x + bed[off : off + x.size] * 32768 * 10 ** (noise_db / 20)
    _write_wav(out_dir / spec.file, x)
    row = {
        "file": spec.file,
        "class": spec.cls,
        "has_beep": int(spec.has_beep),
        "greeting_end_ms": "" if greeting_end is None else round(greeting_end / ms),
        "beep_onset_ms": "" if beep_onset is None else round(beep_onset / ms),
        "kind": spec.kind,
        "voice": spec.voice,
        "text": " | ".join(spec.segments),
        "speed": spec.speed if spec.segments else "",
        "pitch": spec.pitch if spec.segments else "",
        "noise": spec.noise,
        "snr_db": "" if spec.snr_db is None else round(spec.snr_db, 1),
        "beep_hz": spec.beep_hz if spec.has_beep else "",
        "beep_ms": spec.beep_ms if spec.has_beep else "",
        "greeting_start_ms": "" if greeting_start is None else round(greeting_start / ms),
        "duration_ms": round(x.size / ms),
    }
    return row


LABEL_COLUMNS = [
    "file", "class", "has_beep", "greeting_end_ms", "beep_onset_ms", "kind", "voice", "text",
    "speed", "pitch", "noise", "snr_db", "beep_hz", "beep_ms", "greeting_start_ms", "duration_ms",
]  # fmt: skip


def build(
    out_dir: Path,
    count: int = 200,
    seed: int = 1,
    jobs: int = 2,
    progress: bool = True,
    snr: tuple[float, float] = (12.0, 35.0),
) -> list[dict[str, object]]:
    """Build the corpus into ``out_dir`` (created; old clips of this layout are replaced)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found on PATH (Debian packages espeak-ng, sox)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("[0-9][0-9][0-9][0-9]_*.wav"):
        old.unlink()
    specs = plan(count, seed, snr)
    noise_cache = out_dir / "_noise"
    for kind in ("white", "pink"):
        _noise_bed(kind, noise_cache)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        it = pool.map(lambda s: render(s, out_dir, noise_cache, seed), specs)
        if progress and tqdm is not None:
            it = tqdm(it, total=len(specs), desc="amd corpus", unit="clip")
        rows = list(it)
    with open(out_dir / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (out_dir / "corpus.json").write_text(
        json.dumps({"count": count, "seed": seed, "rate": RATE, "snr_db": list(snr)}) + "\n"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--count", type=int, default=200, help="number of clips (default 200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng/sox workers")
    ap.add_argument(
        "--snr",
        default="12:35",
        metavar="LO:HI",
        help="speech-to-noise ratio range in dB for noisy clips (default 12:35)",
    )
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument(
        "--recordings",
        action="store_true",
        help="the recorded-voice corpus (Asterisk prompt sets, rooms, lines: benchmarks/amd/recorded.py) "
        "instead of espeak-ng speech",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.count <= 5000:
        ap.error("--count must be between 1 and 5000")
    if args.recordings:
        from benchmarks.amd import recorded

        rec_rows = recorded.build(args.out, args.count, args.seed, not args.no_progress)
        print(f"wrote {len(rec_rows)} recorded clips to {args.out}", file=sys.stderr)
        return 0
    try:
        lo, hi = (float(v) for v in args.snr.split(":"))
    except ValueError:
        ap.error("--snr expects LO:HI in dB, e.g. 12:35")
    rows = build(args.out, args.count, args.seed, args.jobs, not args.no_progress, (lo, hi))
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r["class"])] = counts.get(str(r["class"]), 0) + 1
    print(f"wrote {len(rows)} clips to {args.out} {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
