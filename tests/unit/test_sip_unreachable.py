"""A destination that cannot be resolved ends the call at once with the reason in its
``Terminated`` (the CLI prints it; the server stores it as the record's error)."""

from __future__ import annotations

from sip import causes
from sip.endpoint import CallProgress, Endpoint, EndpointConfig, ResolveRequest
from sip.events import Terminated
from sip.invite import ClientInviteSession
from sip.message import new_call_id


def test_a_name_that_does_not_resolve_ends_the_call_saying_so() -> None:
    ep = Endpoint(EndpointConfig(local_host="10.0.0.1", ports={"udp": 5060}))
    session = ClientInviteSession.create(
        request_uri="sip:bob@nowhere.invalid",
        from_uri="sip:alice@10.0.0.1",
        to_uri="sip:bob@nowhere.invalid",
        call_id=new_call_id("10.0.0.1"),
        config=ep.session_config("udp", False),
        sdp=None,
    )
    ep.invite(session, 0.0)
    (resolve,) = [e for e in iter(ep.next_event, None) if isinstance(e, ResolveRequest)]
    ep.resolved(resolve.token, [], 0.1)  # NXDOMAIN, no answer, no resolver: all the same
    ended = [
        e.event
        for e in iter(ep.next_event, None)
        if isinstance(e, CallProgress) and isinstance(e.event, Terminated)
    ]
    assert len(ended) == 1
    assert ended[0].cause == causes.NO_ROUTE_DESTINATION and ended[0].sip_status is None
    assert ended[0].reason == "nowhere.invalid did not resolve (DNS)"
    assert ended[0].hangup_source == "error"
    assert ep.datagrams_to_send() == []
