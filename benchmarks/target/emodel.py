"""A simplified ITU-T G.107 E-model: an R-factor and a MOS estimate for one call.

Only the two impairments a call's RTP/RTCP figures can tell us about are modelled, every
other input takes G.107's default values (Table 2), which fold into the basic rating R0 - Is
= 93.2:

    R = 93.2 - Id - Ie_eff                                      (G.107 §3.1, A = 0)

* Id, the delay impairment, from the one-way mouth-to-ear delay Ta in ms. The closed form
  here is the usual fit of G.107's Idd curve for an echo-free call (Cole and Rosenbluth,
  "Voice over IP performance monitoring", 2001):
  Id = 0.024 Ta + 0.11 (Ta - 177.3) H(Ta - 177.3).
  Ta = RTT/2 (from RTCP) + the receiver's jitter buffer + one packet time.
* Ie_eff, the equipment impairment under random packet loss (G.107 §3.6, BurstR = 1):
  Ie_eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl), Ppl in percent.
  Ie and Bpl by codec from ITU-T G.113 Appendix I: G.711 with packet loss concealment
  Ie = 0, Bpl = 25.1. Narrowband values only: G.722 and Opus are rated as G.711 here
  (G.107.1's wideband scale is not modelled), which the report says.

MOS from R (G.107 Annex B): 1 for R < 0, 4.5 for R > 100, else
1 + 0.035 R + R (R - 60) (100 - R) 7e-6.
"""

from __future__ import annotations

from dataclasses import dataclass

R_BASE = 93.2  #: R0 - Is with G.107's default values
#: (Ie, Bpl) per codec (G.113 Appendix I; G.711 with PLC). Others: G.711's.
CODEC_IMPAIRMENT: dict[str, tuple[float, float]] = {
    "PCMU": (0.0, 25.1),
    "PCMA": (0.0, 25.1),
}
DEFAULT_IMPAIRMENT = (0.0, 25.1)


@dataclass(frozen=True)
class Rating:
    r: float
    mos: float
    delay_ms: float  #: the one-way delay Ta the rating used
    loss_pct: float


def delay_impairment(ta_ms: float) -> float:
    """Id for a one-way delay of ``ta_ms`` (no echo)."""
    ta = max(0.0, ta_ms)
    return 0.024 * ta + (0.11 * (ta - 177.3) if ta > 177.3 else 0.0)


def equipment_impairment(loss_pct: float, codec: str | None = None) -> float:
    """Ie_eff for random loss of ``loss_pct`` percent (BurstR = 1)."""
    ie, bpl = CODEC_IMPAIRMENT.get((codec or "").upper(), DEFAULT_IMPAIRMENT)
    ppl = min(100.0, max(0.0, loss_pct))
    return ie + (95.0 - ie) * ppl / (ppl + bpl)


def mos_from_r(r: float) -> float:
    """G.107 Annex B: the estimated conversational MOS for a rating ``r``."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6


def rate(
    *,
    loss_fraction: float,
    rtt_ms: float | None,
    jitter_ms: float = 0.0,
    jitter_buffer_ms: float = 40.0,
    ptime_ms: float = 20.0,
    codec: str | None = None,
) -> Rating:
    """The rating of a call that lost ``loss_fraction`` (0..1) of its packets, with a
    round trip of ``rtt_ms`` (None: not measured, taken as 0). The jitter buffer is the
    larger of ``jitter_buffer_ms`` and twice the measured jitter (an adaptive buffer)."""
    ta = (rtt_ms or 0.0) / 2.0 + max(jitter_buffer_ms, 2.0 * jitter_ms) + ptime_ms
    loss_pct = 100.0 * max(0.0, loss_fraction)
    r = R_BASE - delay_impairment(ta) - equipment_impairment(loss_pct, codec)
    return Rating(r=r, mos=mos_from_r(r), delay_ms=ta, loss_pct=loss_pct)
