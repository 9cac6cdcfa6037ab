"""The message layer's fast paths (issue 14) against the general code they replace: requests
built from templates, the one-pass serializer and the one-Via stamp give the same bytes (or
the same error) as building header by header with ``add``, the line-by-line writer and the
list-splitting stamp, over varied inputs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip._message import SipRequest, SipResponse
from sip._session import SessionConfig
from sip._stateless import stamp_via
from sip.dialog import Dialog
from sip.headers import NameAddr, Via
from sip.invite import ClientInviteSession
from sip.message import parse_message

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_token = st.text("abcdefghijkXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)
# Values as applications and peers give them: mostly clean, sometimes with what must be refused.
_value = st.one_of(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=30
    ),
    st.text(st.sampled_from("ab \t;=<>\r\n\x00é"), max_size=12),
)
_host = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.sampled_from(["example.com", "pbx.example.org", "host-1.lan"]),
)
_port = st.one_of(st.none(), st.integers(1, 65535))
_uri = st.builds(
    lambda user, host, port: f"sip:{user}@{host}" + (f":{port}" if port else ""),
    _token,
    _host,
    _port,
)
_name_addr = st.one_of(
    _uri.map(lambda u: f"<{u}>"),
    st.builds(lambda n, u: f'"{n}" <{u}>', _token, _uri),
    st.builds(lambda u, t: f"<{u}>;tag={t}", _uri, _token),
)


def _generic(method: str, uri: str, lines: list[tuple[str, str]], body: bytes = b"") -> SipRequest:
    request = SipRequest(method, uri)
    for name, value in lines:
        request.add(name, value)
    request.body = body
    return request


def _same(fast, generic) -> None:
    """Both give the same bytes, or both raise ValueError."""
    try:
        expected = generic()
    except ValueError:
        with pytest.raises(ValueError):
            fast()
        return
    assert fast() == expected


# --- the serializer -------------------------------------------------------------------------

_names = st.sampled_from(
    [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "X-Custom",
        "content-length",
        "Route",
    ]
)


@SETTINGS
@given(
    status=st.one_of(st.none(), st.integers(100, 699)),
    headers=st.lists(st.tuples(_names, _value), max_size=10),
    body=st.one_of(st.binary(max_size=40), st.text(max_size=20)),
    uri=st.sampled_from(["sip:bob@10.0.0.2", "sip:bob@10.0.0.2;transport=udp", "sip:a b@x"]),
)
def test_serialize_matches_the_line_by_line_writer(status, headers, body, uri):
    msg: SipRequest | SipResponse = SipResponse(status) if status else SipRequest("BYE", uri)
    msg.headers = list(headers)  # as a caller editing ``headers`` directly may leave them
    msg.body = body  # type: ignore[assignment]
    _same(msg.serialize, msg._serialize_generic)


def test_serialize_parses_back():
    msg = SipRequest("BYE", "sip:bob@10.0.0.2")
    for name, value in [
        ("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx"),
        ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:b@c>;tag=2"),
        ("Call-ID", "c"),
        ("CSeq", "2 BYE"),
    ]:
        msg.add(name, value)
    msg.body = b"hello"
    again = parse_message(msg.serialize())
    assert again.headers[:5] == msg.headers and again.body == b"hello"
    assert again.get("Content-Length") == "5"


# --- requests in a dialog (ACK, BYE, re-INVITE...) -------------------------------------------


@SETTINGS
@given(
    method=st.sampled_from(["ACK", "BYE", "INFO", "UPDATE", "INVITE", "PRACK"]),
    local=_name_addr,
    remote=_name_addr,
    call_id=st.one_of(_token, _value),
    target=_uri,
    routes=st.lists(
        st.one_of(_uri.map(lambda u: f"<{u};lr>"), _uri.map(lambda u: f"<{u}>")), max_size=3
    ),
    seq=st.integers(0, 2**31 - 1),
    extra=st.lists(
        st.tuples(st.sampled_from(["User-Agent", "Reason", "X-Call"]), _value), max_size=3
    ),
    body=st.binary(max_size=20),
)
def test_in_dialog_requests_from_the_template(
    method, local, remote, call_id, target, routes, seq, extra, body
):
    dialog = Dialog(call_id, "lt", "rt", local, remote, seq, target, route_set=list(routes))

    def fast() -> bytes:
        return dialog._request(method, seq, list(extra), body).serialize()

    def generic() -> bytes:
        uri, route_lines = dialog.request_uri_and_routes()
        lines = [("Route", r) for r in route_lines]
        lines += [
            ("Max-Forwards", "70"),
            ("From", local),
            ("To", remote),
            ("Call-ID", call_id),
            ("CSeq", f"{seq} {method}"),
            *extra,
        ]
        return _generic(method, uri, lines, body).serialize()

    _same(fast, generic)


# --- the INVITE -------------------------------------------------------------------------------


@SETTINGS
@given(
    from_uri=_uri,
    to_uri=_uri,
    call_id=st.one_of(_token, _value),
    caller_name=st.one_of(st.none(), _token, st.text(max_size=10)),
    contact=st.one_of(_uri.map(lambda u: f"<{u}>"), _value),
    user_agent=_value,
    session_expires=st.sampled_from([0, 90, 1800]),
    extra=st.lists(
        st.tuples(st.sampled_from(["X-PH-Id", "P-Asserted-Identity"]), _value), max_size=2
    ),
    sdp=st.one_of(st.none(), st.just("v=0\r\n")),
)
def test_the_invite_from_its_template(
    from_uri, to_uri, call_id, caller_name, contact, user_agent, session_expires, extra, sdp
):
    config = SessionConfig(contact=contact, user_agent=user_agent, session_expires=session_expires)
    tag = "fixedtag"

    def fast() -> bytes:
        import sip.invite as invite_module

        original = invite_module.new_tag
        invite_module.new_tag = lambda: tag
        try:
            session = ClientInviteSession.create(
                request_uri=to_uri,
                from_uri=from_uri,
                to_uri=to_uri,
                call_id=call_id,
                config=config,
                caller_name=caller_name,
                sdp=sdp,
                headers=list(extra),
            )
        finally:
            invite_module.new_tag = original
        return session.invite.serialize()

    def generic() -> bytes:
        from_na = NameAddr.parse(from_uri)
        from_na.display_name = caller_name or from_na.display_name
        from_na.params["tag"] = tag
        lines = [
            ("Max-Forwards", "70"),
            ("From", str(from_na)),
            ("To", str(NameAddr.parse(to_uri))),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", contact),
            ("User-Agent", user_agent),
            ("Allow", config.allow),
            ("Supported", config.supported),
        ]
        if session_expires:
            lines += [
                ("Session-Expires", f"{session_expires};refresher=uac"),
                ("Min-SE", str(min(config.min_se, session_expires))),
            ]
        lines += extra
        if sdp is not None:
            lines.append(("Content-Type", "application/sdp"))
        return _generic("INVITE", to_uri, lines, sdp.encode() if sdp else b"").serialize()

    _same(fast, generic)


# --- received= / rport= on a request's top Via ------------------------------------------------


def _stamp_generic(request: SipRequest, source: tuple[str, int]) -> None:
    """The list-splitting stamp (every Via line split into elements, moved to the top)."""
    vias = request.get_all("Via")
    if not vias:
        return
    via = Via.parse(vias[0])
    changed = False
    if via.host.strip("[]") != source[0]:
        via.params["received"] = source[0]
        changed = True
    if "rport" in via.params and not via.params.get("rport"):
        via.params["rport"] = str(source[1])
        via.params["received"] = source[0]
        changed = True
    if changed:
        vias[0] = str(via)
        request.remove("Via")
        for value in reversed(vias):
            request.prepend("Via", value)


_via_value = st.builds(
    lambda transport, host, port, params: (
        f"SIP/2.0/{transport} {host}" + (f":{port}" if port else "") + params
    ),
    st.sampled_from(["UDP", "TCP", "udp", "TLS"]),
    st.one_of(_host, st.just("[::1]")),
    _port,
    st.lists(
        st.sampled_from(
            [
                ";branch=z9hG4bKabc",
                ";rport",
                ";rport=5066",
                ";received=10.9.9.9",
                ";Branch=z9hG4bKX",
                ';x="q"',
                ";alias",
                " ;lr",
            ]
        ),
        max_size=4,
    ).map("".join),
)


@SETTINGS
@given(
    first=_via_value,
    more=st.lists(_via_value, max_size=2),
    same_line=st.booleans(),
    before=st.booleans(),
    source=st.tuples(
        st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "example.com"]), st.integers(1, 65535)
    ),
)
def test_stamp_via_matches_the_general_stamp(first, more, same_line, before, source):
    lines = (
        [("Via", ", ".join([first, *more]))] if same_line else [("Via", v) for v in [first, *more]]
    )
    if before:
        lines.insert(0, ("Max-Forwards", "70"))
    lines += [
        ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:b@c>"),
        ("Call-ID", "c"),
        ("CSeq", "1 INVITE"),
    ]
    fast, generic = SipRequest("INVITE", "sip:b@c"), SipRequest("INVITE", "sip:b@c")
    fast.headers, generic.headers = list(lines), list(lines)
    try:
        _stamp_generic(generic, source)
    except ValueError:
        with pytest.raises(ValueError):
            stamp_via(fast, source)
        return
    stamp_via(fast, source)
    assert fast.headers == generic.headers
    # The view the fast stamp leaves cached is the one reading the new top Via builds.
    fresh = SipRequest("INVITE", "sip:b@c")
    fresh.headers = list(generic.headers)
    try:
        expected = fresh.top_via
    except ValueError:
        return
    assert fast.top_via == expected and str(fast.top_via) == str(expected)


# --- the UAS's 18x and 2xx ----------------------------------------------------------------------


@SETTINGS
@given(
    status=st.sampled_from([180, 183, 200]),
    record_routes=st.lists(_uri.map(lambda u: f"<{u};lr>"), max_size=3),
    contact=st.one_of(_uri.map(lambda u: f"<{u}>"), _value),
    user_agent=_value,
    sdp=st.one_of(st.none(), st.just("v=0\r\n")),
)
def test_uas_responses_from_the_template(status, record_routes, contact, user_agent, sdp):
    from sip.invite_server import ServerInviteSession
    from sip.message import make_response

    lines = [
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa"),
        ("From", "<sip:a@10.0.0.1>;tag=1"),
        ("To", "<sip:b@10.0.0.2>"),
        ("Call-ID", "c@h"),
        ("CSeq", "1 INVITE"),
        *[("Record-Route", r) for r in record_routes],
        ("Contact", "<sip:a@10.0.0.1>"),
    ]
    invite = SipRequest("INVITE", "sip:b@10.0.0.2")
    invite.headers = lines
    config = SessionConfig(contact=contact, user_agent=user_agent)
    session = ServerInviteSession(invite, config)

    def generic() -> bytes:
        response = make_response(invite, status, None, to_tag=session.local_tag)
        for route in invite.get_all("Record-Route"):
            response.add("Record-Route", route)
        response.add("Contact", contact)
        response.add("User-Agent", user_agent)
        if status >= 200:
            response.add("Allow", config.allow)
            response.add("Supported", config.supported)
        if sdp is not None:
            response.add("Content-Type", "application/sdp")
            response.body = sdp.encode()
        return response.serialize()

    _same(lambda: session._response(status, sdp).serialize(), generic)
