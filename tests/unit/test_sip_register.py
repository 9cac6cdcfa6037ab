"""The REGISTER client (sip/register.py) driven through the sans-I/O endpoint: plain bytes
in and out, a fake clock, a registrar played by the test."""

from __future__ import annotations

import pytest

from sip.auth import Credentials
from sip.endpoint import Endpoint, EndpointConfig, RegistrationChanged, Source
from sip.message import SipRequest, make_response, parse_message
from sip.register import Registration, RegistrationConfig

REGISTRAR = ("10.0.0.5", 5060)
CONTACT = "sip:alice@10.0.0.1:5060"


class Registrar:
    """The endpoint under test and what the 'registrar' side sees of it."""

    def __init__(self, **config: object) -> None:
        self.endpoint = Endpoint(EndpointConfig(local_host="10.0.0.1", ports={"udp": 5060}))
        self.now = 0.0
        cfg = RegistrationConfig(
            name="trunk",
            registrar="sip:10.0.0.5:5060",
            aor="sip:alice@trunk.test",
            contact=CONTACT,
            call_id="reg-1@10.0.0.1",
            credentials=Credentials("alice", "secret"),
            **config,  # type: ignore[arg-type]
        )
        self.registration = Registration(cfg)
        self.endpoint.register(self.registration, self.now)

    def sent(self) -> list[SipRequest]:
        out = []
        for datagram in self.endpoint.datagrams_to_send():
            assert datagram.address == REGISTRAR
            message = parse_message(datagram.data)
            assert isinstance(message, SipRequest)
            out.append(message)
        return out

    def one(self) -> SipRequest:
        (request,) = self.sent()
        assert request.method == "REGISTER"
        return request

    def answer(self, request: SipRequest, status: int, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        response = make_response(request, status, to_tag="reg-tag")
        for name, value in headers:
            response.add(name, value)
        self.endpoint.receive(response.serialize(), Source("udp", REGISTRAR), self.now)

    def events(self) -> list[RegistrationChanged]:
        found = []
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, RegistrationChanged):
                found.append(event)
        return found

    def advance_to(self, when: float) -> None:
        """Run the endpoint's timers up to ``when``, in order (bounded)."""
        for _ in range(1000):
            due = self.endpoint.get_timer()
            if due is None or due > when:
                break
            self.now = max(self.now, due)
            self.endpoint.handle_timer(self.now)
        self.now = when


CHALLENGE = (
    "WWW-Authenticate",
    'Digest realm="trunk.test", nonce="abc", qop="auth", algorithm=MD5',
)


def test_register_answers_the_401_then_is_registered_with_the_granted_interval():
    r = Registrar(expires=600)
    first = r.one()
    assert first.get("Expires") == "600" and first.get("Contact") == f"<{CONTACT}>"
    assert first.get("To") == "<sip:alice@trunk.test>" and first.cseq == (1, "REGISTER")
    assert [e.state for e in r.events()] == ["registering"]
    r.answer(first, 401, [CHALLENGE])
    again = r.one()
    assert again.cseq == (2, "REGISTER") and again.call_id == first.call_id
    assert 'username="alice"' in again.get("Authorization") and 'realm="trunk.test"' in again.get(
        "Authorization"
    )
    assert again.get("From") == first.get("From")  # the same tag
    r.now = 0.1
    r.answer(again, 200, [("Contact", f"<{CONTACT}>;expires=300")])  # the registrar shortened it
    (event,) = r.events()
    assert event.state == "registered" and event.expires_at == pytest.approx(300.1)
    assert r.registration.up and r.registration.last_error is None


def test_refresh_at_half_the_granted_interval_keeps_the_state_up():
    r = Registrar(expires=600)
    r.answer(r.one(), 200, [("Expires", "120")])  # no Contact expires: the header's
    r.events()
    assert r.registration.get_timer() == pytest.approx(60.0)
    r.advance_to(59.0)
    assert r.sent() == []
    r.advance_to(60.0)
    refresh = r.one()
    assert refresh.cseq == (2, "REGISTER") and refresh.get("Expires") == "600"
    assert r.events() == [] and r.registration.up  # refreshing does not take the gateway down
    r.answer(refresh, 200, [("Contact", f"<{CONTACT}>;expires=600")])
    assert [e.state for e in r.events()] == ["registered"]
    assert r.registration.get_timer() == pytest.approx(60.0 + 300.0)


def test_refused_registration_backs_off_exponentially_up_to_the_cap():
    r = Registrar(retry_min=5.0, retry_max=20.0)
    r.events()
    delays = []
    for _ in range(4):
        request = r.one()
        start = r.now
        r.answer(request, 403)
        (event,) = [e for e in r.events() if e.state == "failed"]
        assert event.error == "403 Forbidden" and not r.registration.up
        due = r.registration.get_timer()
        assert due is not None
        delays.append(due - start)
        r.advance_to(due)
    assert delays == [5.0, 10.0, 20.0, 20.0]


def test_wrong_password_fails_after_one_challenge():
    r = Registrar()
    r.answer(r.one(), 401, [CHALLENGE])
    r.answer(r.one(), 401, [CHALLENGE])  # the same challenge again: the password is wrong
    assert r.sent() == []
    assert r.registration.state == "failed" and r.registration.last_error == "401 Unauthorized"


def test_423_is_retried_with_the_registrars_min_expires():
    r = Registrar(expires=60)
    r.answer(r.one(), 423, [("Min-Expires", "300")])
    again = r.one()
    assert again.get("Expires") == "300"


def test_no_answer_fails_on_timer_f_and_retries():
    r = Registrar(retry_min=5.0)
    r.one()
    r.advance_to(31.0)
    r.sent()  # retransmissions
    assert r.registration.state == "registering"
    r.advance_to(33.0)
    assert r.registration.state == "failed" and "timeout" in (r.registration.last_error or "")
    r.sent()
    r.advance_to(38.0)
    assert any(req.method == "REGISTER" for req in r.sent())


def test_stop_sends_expires_zero_and_ends_unregistered():
    r = Registrar()
    r.answer(r.one(), 200, [("Contact", f"<{CONTACT}>;expires=3600")])
    r.events()
    r.endpoint.unregister("trunk", r.now)
    bye = r.one()
    assert bye.get("Expires") == "0" and bye.get("Contact") == f"<{CONTACT}>"
    assert [e.state for e in r.events()] == ["unregistering"]
    r.answer(bye, 401, [CHALLENGE])  # challenged again: answered
    final = r.one()
    assert final.get("Expires") == "0" and final.get("Authorization")
    r.answer(final, 200)
    assert [e.state for e in r.events()] == ["unregistered"]
    assert r.registration.get_timer() is None


def test_stop_before_any_binding_sends_nothing():
    r = Registrar()
    r.answer(r.one(), 403)
    r.events()
    r.endpoint.unregister("trunk", r.now)
    assert r.sent() == [] and r.registration.state == "unregistered"


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        RegistrationConfig(
            name="x", registrar="sip:h", aor="sip:a@h", contact="sip:a@h", call_id="c", expires=0
        )


def test_the_address_the_registrar_saw_is_kept_from_received_and_rport():
    """RFC 3581 §4: the 2xx's top Via tells where the REGISTER came from (a NAT's public
    side); without received/rport it is our own sent-by."""
    r = Registrar(expires=600)
    first = r.one()
    assert ";rport" in (first.get("Via") or "")  # we ask for it
    via = first.get("Via") or ""
    response = make_response(first, 200, to_tag="reg-tag")
    response.set("Via", via.replace(";rport", ";received=198.51.100.9;rport=40123"))
    response.add("Contact", f"<{CONTACT}>;expires=300")
    r.endpoint.receive(response.serialize(), Source("udp", REGISTRAR), r.now)
    assert r.registration.up and r.registration.seen_as == ("198.51.100.9", 40123)
    r.advance_to(150.0)  # the refresh, answered without received/rport this time
    again = r.one()
    r.answer(again, 200, [("Contact", f"<{CONTACT}>;expires=300")])
    assert r.registration.seen_as == ("10.0.0.1", 5060)


def test_a_registrar_that_rewrote_our_contact_to_the_address_it_saw_is_believed():
    """A NAT-aware registrar lists our binding at the REGISTER's source (received/rport),
    not at our Contact: that binding's expires is ours (not "no binding for our Contact")."""
    r = Registrar(expires=600)
    first = r.one()
    via = first.get("Via") or ""
    response = make_response(first, 200, to_tag="reg-tag")
    response.set("Via", via.replace(";rport", ";received=198.51.100.9;rport=40123"))
    response.add("Contact", "<sip:bob@198.51.100.7:5060>;expires=900")  # another phone of the AoR
    response.add("Contact", "<sip:alice@198.51.100.9:40123>;expires=300")
    r.endpoint.receive(response.serialize(), Source("udp", REGISTRAR), r.now)
    reg = r.registration
    assert reg.up and reg.expires_at == r.now + 300
    assert reg.bound_contact == "sip:alice@198.51.100.9:40123"
    r.advance_to(150.0)  # the refresh: a single rewritten Contact with our user part
    again = r.one()
    r.answer(again, 200, [("Contact", "<sip:alice@192.0.2.1:5099;ob>;expires=200")])
    assert reg.up and reg.expires_at == r.now + 200
    assert reg.bound_contact == "sip:alice@192.0.2.1:5099;ob"


def test_a_2xx_listing_only_other_users_bindings_is_no_binding_of_ours():
    r = Registrar(expires=600)
    r.answer(r.one(), 200, [("Contact", "<sip:bob@198.51.100.7:5060>;expires=900")])
    assert r.registration.state == "failed"
    assert r.registration.last_error == "registrar kept no binding for our Contact"
