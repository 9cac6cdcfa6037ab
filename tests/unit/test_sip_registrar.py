"""The registrar for phones (sip/registrar.py) through the sans-I/O endpoint: our own REGISTER
client (sip/register.py) and hand-made REGISTERs against it on the loop network, a fake
clock; then a call placed to a binding goes to the address the REGISTER came from."""

from __future__ import annotations

from sip.auth import Credentials, DigestClient, parse_challenge
from sip.endpoint import BindingsChanged, Endpoint, EndpointConfig, IncomingCall, Source
from sip.message import SipRequest, SipResponse, new_call_id, parse_message
from sip.register import Registration, RegistrationChanged, RegistrationConfig
from sip.registrar import RegistrarConfig
from sip.testing import SERVER, LoopNetwork, client_and_server, make_client_session

PHONE = ("10.0.0.1", 5060)
USERS = {"alice": "secret", "bob": "hunter2"}


def network(**registrar: object) -> tuple[LoopNetwork, Endpoint, Endpoint]:
    config = RegistrarConfig(realm="pbx.test", users=USERS, **registrar)  # type: ignore[arg-type]
    return client_and_server(server_config=EndpointConfig(accept_inbound=True, registrar=config))


def registration(password: str = "secret", user: str = "alice", expires: int = 600) -> Registration:
    return Registration(
        RegistrationConfig(
            name=user,
            registrar="sip:10.0.0.2:5060",
            aor=f"sip:{user}@pbx.test",
            contact=f"sip:{user}@10.0.0.1:5060",
            call_id=new_call_id("10.0.0.1"),
            credentials=Credentials(user, password),
            expires=expires,
        )
    )


def statuses(net: LoopNetwork) -> list[str]:
    return [d.first_line for d in net.sent(SERVER, "SIP/2.0")]


def test_a_phone_registers_with_digest_and_its_binding_is_kept_with_the_granted_interval():
    net, phone, pbx = network(max_expires=300)
    reg = registration(expires=600)
    phone.register(reg, net.now)
    net.roundtrip()
    assert statuses(net)[:2] == ["SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"]
    assert reg.state == "registered"
    assert reg.expires_at == net.now + 300  # shortened to max_expires, our Contact's expires
    assert pbx.registrar is not None
    (binding,) = pbx.registrar.lookup("alice", net.now)
    assert binding.contact == "sip:alice@10.0.0.1:5060"
    assert binding.address == PHONE and binding.transport == "udp"
    assert net.take(pbx, BindingsChanged) == [
        BindingsChanged("alice", ("sip:alice@10.0.0.1:5060",))
    ]
    # Unanswered refreshes let it lapse: the binding goes when it expires.
    net.drop = lambda delivery: True
    net.advance(301)
    assert pbx.registrar.lookup("alice", net.now) == []


def test_a_wrong_password_is_forbidden_and_nothing_is_bound():
    net, phone, pbx = network()
    reg = registration(password="wrong")
    phone.register(reg, net.now)
    net.roundtrip()
    assert statuses(net)[:2] == ["SIP/2.0 401 Unauthorized", "SIP/2.0 403 Forbidden"]
    assert reg.state == "failed" and reg.last_error == "403 Forbidden"
    assert pbx.registrar is not None and pbx.registrar.lookup("alice", net.now) == []


def test_credentials_of_another_user_cannot_register_an_aor():
    net, phone, pbx = network()
    reg = Registration(
        RegistrationConfig(
            name="x",
            registrar="sip:10.0.0.2:5060",
            aor="sip:alice@pbx.test",
            contact="sip:alice@10.0.0.1:5060",
            call_id="c1",
            credentials=Credentials("bob", "hunter2"),
        )
    )
    phone.register(reg, net.now)
    net.roundtrip()
    assert reg.last_error == "403 Forbidden"


def test_unregister_removes_the_binding():
    net, phone, pbx = network()
    reg = registration()
    phone.register(reg, net.now)
    net.roundtrip()
    assert pbx.registrar is not None and len(pbx.registrar.lookup("alice", net.now)) == 1
    phone.unregister("alice", net.now)
    net.roundtrip()
    assert reg.state == "unregistered"
    assert pbx.registrar.lookup("alice", net.now) == []
    assert net.take(pbx, BindingsChanged)[-1] == BindingsChanged("alice", ())


class Phone:
    """Hand-made REGISTERs (several contacts, *, short intervals) answered by the PBX."""

    def __init__(self) -> None:
        self.net, _, self.pbx = network()
        self.digest = DigestClient()
        self.cseq = 0
        self.call_id = "phone-1"
        self.challenge: str | None = None

    def register(
        self,
        contacts: list[str],
        expires: int | None = None,
        *,
        rport: bool = True,
        source: tuple[str, int] = PHONE,
        call_id: str | None = None,
    ) -> SipResponse:
        for _ in range(2):
            self.cseq += 1
            request = SipRequest("REGISTER", "sip:pbx.test")
            via = f"SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bK{new_call_id('b')[:12]}"
            request.add("Via", via + (";rport" if rport else ""))
            request.add("From", "<sip:alice@pbx.test>;tag=p1")
            request.add("To", "<sip:alice@pbx.test>")
            request.add("Call-ID", call_id or self.call_id)
            request.add("CSeq", f"{self.cseq} REGISTER")
            for contact in contacts:
                request.add("Contact", contact)
            if expires is not None:
                request.add("Expires", str(expires))
            if self.challenge is not None:
                creds = Credentials("alice", "secret")
                challenge = parse_challenge(self.challenge)
                request.add(
                    "Authorization",
                    self.digest.authorization(challenge, creds, "REGISTER", request.uri),
                )
            self.pbx.receive(request.serialize(), Source("udp", source), self.net.now)
            (datagram,) = self.pbx.datagrams_to_send()
            response = parse_message(datagram.data)
            assert isinstance(response, SipResponse)
            self.last_address = datagram.address
            if response.status != 401:
                return response
            self.challenge = response.get("WWW-Authenticate")
        return response

    def contacts(self) -> list[str]:
        assert self.pbx.registrar is not None
        return [b.contact for b in self.pbx.registrar.lookup("alice", self.net.now)]


def test_several_contacts_with_their_own_expires_then_star_removes_them_all():
    phone = Phone()
    response = phone.register(
        ["<sip:alice@192.168.1.20:5062>;expires=120", "<sip:alice@192.168.1.21:5062>;q=0.5"], 600
    )
    assert response.status == 200
    listed = {c.split(";")[0]: c for c in response.get_all("Contact")}
    assert listed["<sip:alice@192.168.1.20:5062>"].endswith("expires=120")
    assert listed["<sip:alice@192.168.1.21:5062>"].endswith("expires=600")
    # best first: q=1 before q=0.5
    assert phone.contacts() == ["sip:alice@192.168.1.20:5062", "sip:alice@192.168.1.21:5062"]
    phone.net.now += 121
    assert phone.contacts() == ["sip:alice@192.168.1.21:5062"]
    assert phone.register(["*"], 3600).status == 400  # * only with Expires: 0
    assert phone.register(["*"], 0).status == 200
    assert phone.contacts() == []


def test_too_short_an_interval_gets_423_with_min_expires():
    phone = Phone()
    response = phone.register(["<sip:alice@192.168.1.20:5062>"], 10)
    assert response.status == 423 and response.get("Min-Expires") == "60"
    assert phone.contacts() == []


def test_contact_expires_zero_removes_one_binding():
    phone = Phone()
    phone.register(["<sip:alice@192.168.1.20:5062>", "<sip:alice@192.168.1.21:5062>"], 600)
    assert phone.register(["<sip:alice@192.168.1.20:5062>;expires=0"]).status == 200
    assert phone.contacts() == ["sip:alice@192.168.1.21:5062"]


def test_the_binding_keeps_the_nat_source_and_answers_go_there():
    phone = Phone()
    nat = ("203.0.113.9", 40000)
    assert phone.register(["<sip:alice@192.168.1.20:5062>"], 600, source=nat).status == 200
    assert phone.last_address == nat  # rport: the answer goes to the source
    assert phone.pbx.registrar is not None
    (binding,) = phone.pbx.registrar.lookup("alice", phone.net.now)
    assert binding.address == nat
    # Without rport: the source host and the Via's port (§18.2.2).
    phone.net.now += 1
    phone.register(["<sip:alice@192.168.1.30:5062>"], 600, rport=False, source=nat, call_id="other")
    latest = phone.pbx.registrar.lookup("alice", phone.net.now)[0]
    assert latest.address == ("203.0.113.9", 5062)


def test_an_out_of_order_cseq_from_the_same_call_id_is_refused():
    phone = Phone()
    phone.register(["<sip:alice@192.168.1.20:5062>"], 600)
    phone.cseq = 0
    assert phone.register(["<sip:alice@192.168.1.20:5062>"], 300).status == 500


def test_a_stale_nonce_is_challenged_again_with_stale_true():
    phone = Phone()
    phone.register(["<sip:alice@192.168.1.20:5062>"], 600)
    phone.net.now += 1000  # past nonce_ttl
    phone.cseq += 1
    request = SipRequest("REGISTER", "sip:pbx.test")
    request.add("Via", "SIP/2.0/UDP 192.168.1.20:5062;branch=z9hG4bKstale;rport")
    request.add("From", "<sip:alice@pbx.test>;tag=p1")
    request.add("To", "<sip:alice@pbx.test>")
    request.add("Call-ID", phone.call_id)
    request.add("CSeq", f"{phone.cseq} REGISTER")
    request.add("Contact", "<sip:alice@192.168.1.20:5062>")
    assert phone.challenge is not None
    request.add(
        "Authorization",
        phone.digest.authorization(
            parse_challenge(phone.challenge),
            Credentials("alice", "secret"),
            "REGISTER",
            request.uri,
        ),
    )
    phone.pbx.receive(request.serialize(), Source("udp", PHONE), phone.net.now)
    (datagram,) = phone.pbx.datagrams_to_send()
    response = parse_message(datagram.data)
    assert isinstance(response, SipResponse) and response.status == 401
    assert "stale=true" in (response.get("WWW-Authenticate") or "")


def test_without_users_register_is_not_served():
    net, phone, pbx = client_and_server()
    reg = registration()
    phone.register(reg, net.now)
    net.roundtrip()
    assert statuses(net)[0].startswith("SIP/2.0 405")
    assert net.take(phone, RegistrationChanged)[-1].state == "failed"


def test_a_call_to_a_binding_goes_to_where_the_register_came_from():
    phone = Phone()
    nat = ("10.0.0.1", 5060)  # the loop network's client endpoint
    phone.register(["<sip:alice@192.168.1.20:5062>"], 600, source=nat)
    pbx = phone.pbx
    assert pbx.registrar is not None
    (binding,) = pbx.registrar.lookup("alice", phone.net.now)
    session = make_client_session(pbx, binding.contact)
    pbx.invite(session, phone.net.now, binding=binding)
    (datagram,) = pbx.datagrams_to_send()
    assert datagram.address == nat
    assert datagram.data.startswith(b"INVITE sip:alice@192.168.1.20:5062 SIP/2.0")


def test_a_sips_invite_over_a_plain_transport_is_refused_with_416():
    net, phone, pbx = network()
    session = make_client_session(phone, "sips:bob@10.0.0.2")
    # Pretend it was sent over UDP (our own UAC would insist on TLS).
    request = session.invite
    request.prepend("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsips1;rport")
    pbx.receive(request.serialize(), Source("udp", PHONE), net.now)
    answers = [parse_message(d.data) for d in pbx.datagrams_to_send()]
    assert [a.status for a in answers if isinstance(a, SipResponse)] == [416]
    assert not pbx.calls


def test_an_invite_from_one_of_our_users_must_carry_her_credentials():
    net, phone, pbx = network()
    session = make_client_session(phone, "sip:6000@10.0.0.2", from_user="alice")
    session.invite.set("From", f"<sip:alice@pbx.test>;tag={session.invite.from_tag}")
    phone.invite(session, net.now)
    net.roundtrip()
    assert "SIP/2.0 401 Unauthorized" in statuses(net)
    assert not net.take(pbx, IncomingCall)
    # Our UAC answers the challenge with credentials (here: wrong ones, then right ones).
    for password, expected in (("wrong", "SIP/2.0 403 Forbidden"), ("secret", None)):
        net.wire.clear()
        retry = make_client_session(phone, "sip:6000@10.0.0.2", from_user="alice")
        retry.invite.set("From", f"<sip:alice@pbx.test>;tag={retry.invite.from_tag}")
        retry.credentials = Credentials("alice", password)
        phone.invite(retry, net.now)
        net.roundtrip()
        if expected:
            assert expected in statuses(net)
        else:
            assert len(net.take(pbx, IncomingCall)) == 1
