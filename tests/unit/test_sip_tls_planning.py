"""The sans-I/O side of SIP over TLS (RFC 3261 §26.2, RFC 5630): which transport a URI
picks, what our Via and Contact say, and the name a TLS peer's certificate must carry."""

from __future__ import annotations

from sip._stateless import pick_transport, targets_now
from sip.endpoint import Endpoint, EndpointConfig, ResolveRequest
from sip.invite import ClientInviteSession
from sip.locate import Target
from sip.message import new_call_id, parse_message
from sip.uri import SipUri, parse_uri

PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


def uri(text: str) -> SipUri:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    return parsed


def test_sips_and_transport_tls_pick_tls_and_never_downgrade() -> None:
    assert pick_transport(uri("sips:bob@10.0.0.2"), None, PORTS) == "tls"
    # RFC 5630 §3.1.3: sips with transport=tcp (or a udp target) is still TLS.
    assert pick_transport(uri("sips:bob@10.0.0.2;transport=tcp"), None, PORTS) == "tls"
    assert pick_transport(uri("sips:bob@10.0.0.2"), Target("10.0.0.2", 5061, "udp"), PORTS) == "tls"
    assert pick_transport(uri("sip:bob@10.0.0.2;transport=tls"), None, PORTS) == "tls"
    # No TLS transport here: still TLS (the send fails), never UDP/TCP in clear.
    assert pick_transport(uri("sips:bob@10.0.0.2"), None, {"udp": 5060}) == "tls"
    assert pick_transport(uri("sip:bob@10.0.0.2;transport=TLS"), None, {"udp": 5060}) == "tls"
    assert pick_transport(uri("sip:bob@10.0.0.2"), None, PORTS) == "udp"


def test_ip_literal_targets_of_sips_are_tls_on_5061() -> None:
    assert targets_now(uri("sips:bob@10.0.0.2")) == [Target("10.0.0.2", 5061, "tls")]
    assert targets_now(uri("sip:bob@10.0.0.2;transport=tls")) == [Target("10.0.0.2", 5061, "tls")]
    assert targets_now(uri("sips:bob@[::1]:5071")) == [Target("::1", 5071, "tls")]
    assert targets_now(uri("sips:bob@example.com")) is None  # RFC 3263 lookup


def endpoint() -> Endpoint:
    return Endpoint(EndpointConfig(local_host="10.0.0.1", ports=dict(PORTS)))


def invite(ep: Endpoint, target: str, transport: str, secure: bool) -> None:
    session = ClientInviteSession.create(
        request_uri=target,
        from_uri="sip:alice@10.0.0.1",
        to_uri=target,
        call_id=new_call_id("10.0.0.1"),
        config=ep.session_config(transport, secure),
        sdp=None,
    )
    ep.invite(session, 0.0)


def test_invite_over_tls_says_so_in_via_and_contact_with_the_uri_host_as_name() -> None:
    ep = endpoint()
    invite(ep, "sip:bob@10.0.0.2;transport=tls", "tls", False)
    (datagram,) = ep.datagrams_to_send()
    assert (datagram.transport, datagram.address) == ("tls", ("10.0.0.2", 5061))
    assert datagram.server_name == "10.0.0.2"
    request = parse_message(datagram.data)
    assert request.get("Via").startswith("SIP/2.0/TLS 10.0.0.1:5061;")
    assert "alias" in request.top_via.params
    assert request.get("Contact") == "<sip:softswitch@10.0.0.1:5061;transport=tls>"


def test_sips_request_uri_gets_a_sips_contact_and_a_tls_only_lookup() -> None:
    ep = endpoint()
    invite(ep, "sips:bob@pbx.example.com", "tls", True)
    (resolve,) = [e for e in iter(ep.next_event, None) if isinstance(e, ResolveRequest)]
    assert resolve.secure and resolve.host == "pbx.example.com"
    assert "tls" in resolve.supported
    ep.resolved(resolve.token, [Target("192.0.2.7", 5061, "tls")], 0.0)
    (datagram,) = ep.datagrams_to_send()
    # The certificate must match the name dialled, not the address it resolved to.
    assert (datagram.transport, datagram.server_name) == ("tls", "pbx.example.com")
    request = parse_message(datagram.data)
    assert request.get("Contact") == "<sips:softswitch@10.0.0.1:5061>"
    assert request.get("Via").startswith("SIP/2.0/TLS ")


def test_udp_requests_carry_no_server_name() -> None:
    ep = endpoint()
    invite(ep, "sip:bob@10.0.0.2", "udp", False)
    (datagram,) = ep.datagrams_to_send()
    assert (datagram.transport, datagram.server_name) == ("udp", None)
