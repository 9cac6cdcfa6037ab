"""Inbound calls: the ``[[inbound]]`` routes pick an application for a caller's INVITE.

The SIP user agent (:class:`softswitch.ua.UserAgent` with ``accept_inbound``) hands each
inbound leg to :meth:`InboundRouter.on_incoming`. The called number (the Request-URI user)
selects a route (:func:`softswitch.config.select_inbound`: the exact number, else the longest
prefix); no route: 404. A routed call becomes a :class:`~softswitch.calltable.Call` with
direction inbound, run by :meth:`softswitch.call.CallManager.take_inbound`: answered, its
answer URL fetched and the document executed in the route's dialect, so it may ``Dial`` out
(a B2BUA: :mod:`softswitch.dial` bridges the legs). Who may call at all is the SIP policy's
business (:mod:`sip.policy`: the gateways and ``sip_allowed_peers``; 403 to others).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .config import InboundRoute, select_inbound
from .model import CallbackEvent, CallSpec, HttpMethod, Timers, Webhook

if TYPE_CHECKING:
    from .call import CallManager

log = logging.getLogger("softswitch.inbound")

__all__ = ["InboundRouter", "inbound_spec"]

#: An inbound call's ``time_limit`` (s): as an outbound call's default, 4 hours.
INBOUND_TIME_LIMIT_S = 14400.0


def inbound_spec(
    route: InboundRoute, called: str, caller: str, caller_name: str | None
) -> CallSpec:
    """The call spec of an inbound call to ``called`` from ``caller`` on ``route``."""
    notify = {}
    if route.hangup_url:
        notify[CallbackEvent.HANGUP] = Webhook(
            route.hangup_url, HttpMethod(route.hangup_method.upper())
        )
    return CallSpec(
        destinations=(called,),
        from_=caller or "anonymous",
        answer=Webhook(route.answer_url, HttpMethod(route.answer_method.upper())),
        timers=Timers(ring_timeout=0.0, time_limit=INBOUND_TIME_LIMIT_S),
        caller_name=caller_name,
        notify=notify,
        dialect=route.dialect,
        record_params={
            "from": caller,
            "to": called,
            "answer_url": route.answer_url,
            "answer_method": route.answer_method,
            "hangup_url": route.hangup_url,
            "hangup_method": route.hangup_method,
        },
    )


class InboundRouter:
    """Routes inbound legs to applications through one :class:`CallManager`."""

    def __init__(self, manager: CallManager, routes: Sequence[InboundRoute]) -> None:
        unknown = sorted({r.dialect for r in routes if r.dialect} - set(manager.dialects))
        if unknown:
            raise ValueError(
                f"inbound route dialect {unknown[0]!r} is not served "
                f"(served: {', '.join(sorted(manager.dialects))})"
            )
        for route in routes:
            if route.account and manager.account(route.account) is None:
                raise ValueError(f"inbound route account {route.account!r} does not exist")
        self.manager = manager
        self.routes = list(routes)
        #: Inbound INVITEs refused, by status (404 unknown number, 503 shutting down...).
        self.refused: dict[int, int] = {}

    def route_for(self, called: str) -> InboundRoute | None:
        return select_inbound(self.routes, called)

    def on_incoming(self, leg: Any) -> None:
        """The user agent's ``on_incoming``: route ``leg`` (an inbound leg) or refuse it."""
        called = leg.called_user
        route = self.route_for(called)
        if route is None:
            log.info("inbound call to %r from %s: no route (404)", called, leg.source)
            self._refuse(leg, 404)
            return
        manager = self.manager
        account = (
            manager.account(route.account)
            if route.account
            else next(iter(manager.accounts.values()), None)
        )
        if account is None:
            log.warning("inbound call to %r: no account to run it (503)", called)
            self._refuse(leg, 503)
            return
        try:
            spec = inbound_spec(route, called, leg.caller_user, leg.caller_name)
        except ValueError as exc:
            log.warning("inbound call to %r: %s (500)", called, exc)
            self._refuse(leg, 500)
            return
        manager.spawn(self._take(leg, account, spec), f"inbound-{leg.uuid}")

    async def _take(self, leg: Any, account: Any, spec: CallSpec) -> None:
        try:
            await self.manager.take_inbound(leg, account, spec)
        except Exception as exc:  # the leg has been refused (503/500)
            log.warning("inbound call %s not taken: %s", leg.uuid, exc)

    def _refuse(self, leg: Any, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1
        leg.reject(status)
