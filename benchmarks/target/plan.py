"""What a run does, parsed once from the command line: rate (fixed or a ramp), hold time
(fixed or a distribution), what to play, digits, limits. Every figure has a hard cap
(:data:`CAPS`) that no flag lifts: this tool loads somebody's production system."""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: Ceilings no option lifts: calls per second, calls up at once, calls in a run, seconds of
#: placing calls, seconds of one call's hold, digits per call.
CAPS: dict[str, float] = {
    "rate": 200.0,
    "concurrency": 2000,
    "calls": 100_000,
    "duration": 4 * 3600.0,
    "hold": 3600.0,
    "digits": 32,
}


class PlanError(ValueError):
    """A flag's value is malformed or over its cap; the message names the flag."""


@dataclass(frozen=True)
class Ramp:
    """Calls per second: ``start`` rising linearly to ``end`` over ``seconds``, then ``end``
    (``seconds`` = 0: a fixed rate)."""

    start: float
    end: float
    seconds: float = 0.0

    def at(self, t: float) -> float:
        if self.seconds <= 0 or t >= self.seconds:
            return self.end
        return self.start + (self.end - self.start) * max(0.0, t) / self.seconds

    @classmethod
    def parse(cls, text: str) -> Ramp:
        """``10`` (fixed) or ``1:20:60`` (from 1 to 20 calls/s over 60 s)."""
        try:
            parts = [float(x) for x in text.split(":")]
        except ValueError as exc:
            raise PlanError(f"--rate: not a number or START:END:SECONDS: {text!r}") from exc
        if len(parts) == 1:
            ramp = cls(parts[0], parts[0])
        elif len(parts) == 3:
            ramp = cls(*parts)
        else:
            raise PlanError(f"--rate: RATE or START:END:SECONDS, not {text!r}")
        top = max(ramp.start, ramp.end)
        if min(ramp.start, ramp.end) <= 0 or ramp.seconds < 0:
            raise PlanError("--rate: rates must be > 0 and the ramp's seconds >= 0")
        if top > CAPS["rate"]:
            raise PlanError(f"--rate: {top:g} calls/s is over the cap of {CAPS['rate']:g}")
        return ramp


@dataclass(frozen=True)
class Hold:
    """How long an answered call is held before our BYE: ``fixed`` seconds, ``uniform``
    between ``a`` and ``b``, or ``exp`` with mean ``a`` (capped at ``b``)."""

    kind: str
    a: float
    b: float = 0.0

    def draw(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exp":
            return min(self.b, rng.expovariate(1.0 / self.a))
        return self.a

    @property
    def mean(self) -> float:
        if self.kind == "uniform":
            return (self.a + self.b) / 2.0
        if self.kind == "exp":
            return self.a * (1.0 - math.exp(-self.b / self.a))
        return self.a

    @classmethod
    def parse(cls, text: str) -> Hold:
        """``30`` (fixed), ``10-60`` (uniform) or ``exp:90`` (exponential, mean 90 s, at
        most the cap or 10 times the mean)."""
        cap = CAPS["hold"]
        try:
            if text.startswith("exp:"):
                mean = float(text[4:])
                hold = cls("exp", mean, min(cap, 10.0 * mean))
            elif re.fullmatch(r"[0-9.]+-[0-9.]+", text):
                low, high = (float(x) for x in text.split("-"))
                hold = cls("uniform", low, high)
            else:
                hold = cls("fixed", float(text))
        except ValueError as exc:
            raise PlanError(f"--hold: SECONDS, LOW-HIGH or exp:MEAN, not {text!r}") from exc
        if (
            hold.a <= 0
            and hold.kind == "exp"
            or hold.a < 0
            or (hold.kind == "uniform" and hold.b < hold.a)
        ):
            raise PlanError(f"--hold: {text!r} is not a usable hold time")
        if max(hold.a, hold.b) > cap:
            raise PlanError(f"--hold: over the cap of {cap:g} s")
        return hold


@dataclass(frozen=True)
class Media:
    """What each call plays once answered: ``tone`` (``value`` Hz, possibly ``a+b``),
    ``file`` (a path, looped), ``speech`` (text for espeak-ng, looped) or ``silence``."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Media:
        kind, _, value = text.partition(":")
        if kind == "silence" and not value:
            return cls("silence")
        if kind == "tone":
            try:
                freqs = [float(x) for x in (value or "1004").split("+")]
            except ValueError as exc:
                raise PlanError(f"--play: tone:HZ[+HZ], not {text!r}") from exc
            if not freqs or not all(20 <= f <= 3900 for f in freqs):
                raise PlanError("--play: tone frequencies must be 20..3900 Hz")
            return cls("tone", value or "1004")
        if kind in ("file", "speech") and value:
            return cls(kind, value)
        raise PlanError(f"--play: tone[:HZ], file:PATH, speech:TEXT or silence, not {text!r}")


@dataclass
class Plan:
    """One run, as the command line asked for it (JSON-able with :meth:`to_dict`)."""

    target: str
    rate: Ramp
    concurrency: int
    hold: Hold
    calls: int
    duration: float
    ring_timeout: float = 30.0
    transport: str | None = None
    codec: str | None = None
    play: Media = field(default_factory=lambda: Media("tone", "1004"))
    digits: str = ""
    digits_delay: float = 0.5
    expect_digits: str | None = None
    digit_timeout: float = 3.0
    amd: bool = False
    from_user: str = "bench"
    gateway_host: str | None = None
    gateway_port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    local_host: str | None = None
    sip_port: int = 0
    rtp_ports: tuple[int, int] = (40000, 49999)
    jitter_buffer_ms: float = 40.0
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.target.strip():
            raise PlanError("TARGET: a SIP URI or a number (with --gateway) must be named")
        checks = (
            ("--concurrency", self.concurrency, 1, CAPS["concurrency"]),
            ("--calls", self.calls, 1, CAPS["calls"]),
            ("--duration", self.duration, 0, CAPS["duration"]),
            ("--ring-timeout", self.ring_timeout, 0.5, 300),
        )
        for flag, value, low, high in checks:
            if not low <= value <= high:
                raise PlanError(f"{flag}: {value:g} is outside {low:g}..{high:g}")
        if len(self.digits.replace("w", "").replace("W", "")) > CAPS["digits"]:
            raise PlanError(f"--digits: more than {CAPS['digits']:g} digits")
        if self.transport not in (None, "udp", "tcp", "tls"):
            raise PlanError("--transport: udp, tcp or tls")
        low, high = self.rtp_ports
        if not (1024 <= low < high <= 65535) or high - low < 2:
            raise PlanError("--rtp-ports: LOW-HIGH within 1024..65535")

    @property
    def expected_digits(self) -> str:
        """The digits the far end should send back (default: the ones sent, an echo)."""
        if self.expect_digits is not None:
            return self.expect_digits
        return re.sub(r"@\d+|[wW]", "", self.digits)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["password"] = "***" if self.password else None
        return out
