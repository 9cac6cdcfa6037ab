"""SRTP and SRTCP (RFC 3711) for one stream, keyed by SDES (:mod:`media.sdp._crypto`), on
libsrtp through ``pylibsrtp``.

:class:`SrtpContext` holds two libsrtp sessions: one that protects what we send (our master
key, any outbound SSRC) and one that unprotects what we receive (the peer's key, any inbound
SSRC, libsrtp's 128-packet replay window). A stream holds ``None`` instead while its media is
plain RTP, so the plain path costs one ``is None`` test per packet.

Packets are protected after they are built and unprotected before they are parsed: a
received packet that fails authentication (or replays one already seen) is dropped before
latching, statistics, DTMF and audio, and counted (``stats()["srtp_auth_failures"]``,
``["srtp_replays"]``).

Until the keys are known, a stream whose policy is ``mandatory`` holds an *unkeyed* context
(:meth:`SrtpContext.unkeyed`: throw-away random keys): nothing it receives authenticates, so
early packets are dropped and counted rather than decoded as noise, and nothing can leave in
clear.

Rekeying (a new SDP exchange with another key, RFC 4568 §7.1.4): :meth:`SrtpContext.rekeyed`
keeps a session whose key did not change (its rollover counter goes on) and starts a new one
for a key that did.
"""

from __future__ import annotations

import secrets

import pylibsrtp

from ..sdp import SUPPORTED_SUITES, SrtpParameters

# RFC 4568 §6.2 suite -> libsrtp profile (for _32 libsrtp uses the 80-bit SRTCP tag, as §6.2.2
# requires).
_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def _session(suite: str, key: bytes, inbound: bool) -> pylibsrtp.Session:
    ssrc_type = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(
        pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=_PROFILES[suite])
    )


class SrtpContext:
    """The SRTP sessions of one stream (see the module docstring)."""

    __slots__ = ("params", "keyed", "_tx", "_rx", "auth_failures", "replays")

    def __init__(self, params: SrtpParameters) -> None:
        if params.suite not in _PROFILES:
            raise ValueError(f"SRTP suite {params.suite} is not supported")
        self.params = params
        self.keyed = True
        self._tx = _session(params.suite, params.send_key, inbound=False)
        self._rx = _session(params.suite, params.receive_key, inbound=True)
        self.auth_failures = 0
        self.replays = 0

    @classmethod
    def unkeyed(cls) -> SrtpContext:
        """A context for before the SDES exchange: random keys nobody else has."""
        suite, size = next(iter(SUPPORTED_SUITES.items()))
        ctx = cls(SrtpParameters(suite, 0, secrets.token_bytes(size), secrets.token_bytes(size)))
        ctx.keyed = False
        return ctx

    @property
    def suite(self) -> str | None:
        """The negotiated suite (``None`` while unkeyed)."""
        return self.params.suite if self.keyed else None

    def rekeyed(self, params: SrtpParameters) -> SrtpContext:
        """This context for a new exchange: itself when nothing changed, else one that keeps
        each session whose key and suite stayed (and the counters)."""
        old = self.params
        if not self.keyed:
            new = SrtpContext(params)
            new.auth_failures, new.replays = self.auth_failures, self.replays
            return new
        if params == old:
            return self
        new = SrtpContext.__new__(SrtpContext)
        new.params = params
        new.keyed = True
        same_suite = params.suite == old.suite
        new._tx = (
            self._tx
            if same_suite and params.send_key == old.send_key
            else _session(params.suite, params.send_key, inbound=False)
        )
        new._rx = (
            self._rx
            if same_suite and params.receive_key == old.receive_key
            else _session(params.suite, params.receive_key, inbound=True)
        )
        new.auth_failures = self.auth_failures
        new.replays = self.replays
        return new

    def protect_rtp(self, packet: bytes) -> bytes:
        return self._tx.protect(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        return self._tx.protect_rtcp(packet)

    def unprotect_rtp(self, packet: bytes) -> bytes | None:
        """The RTP packet inside, or ``None`` (counted) when it fails authentication, replays
        an index already seen, or is too short to be SRTP."""
        try:
            return self._rx.unprotect(packet)
        except pylibsrtp.Error as exc:
            self._count(exc)
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The compound RTCP packet inside, or ``None`` (counted), as :meth:`unprotect_rtp`."""
        try:
            return self._rx.unprotect_rtcp(packet)
        except pylibsrtp.Error as exc:
            self._count(exc)
            return None

    def _count(self, exc: pylibsrtp.Error) -> None:
        if "replay" in str(exc):
            self.replays += 1
        else:
            self.auth_failures += 1
