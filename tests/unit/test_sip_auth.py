"""Digest authentication (sip/auth.py): published vectors, parsing, client state, and a real
peer (sipp's <verifyauth>) over loopback."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.auth import (
    AuthError,
    Challenge,
    Credentials,
    DigestClient,
    choose_challenge,
    choose_challenges,
    compute_response,
    parse_challenge,
    parse_challenges,
)

# ---------------------------------------------------------------------------------------------
# Published vectors
# ---------------------------------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    # RFC 2617 §3.5: Mufasa / "Circle Of Life", MD5, qop=auth.
    assert (
        compute_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method="GET",
            uri="/dir/index.html",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


RFC7616_CHALLENGE_MD5 = """Digest
       realm="http-auth@example.org",
       qop="auth, auth-int",
       algorithm=MD5,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""""

RFC7616_CHALLENGE_SHA256 = RFC7616_CHALLENGE_MD5.replace("algorithm=MD5", "algorithm=SHA-256")
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("challenge_text", "expected"),
    [
        (RFC7616_CHALLENGE_MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            RFC7616_CHALLENGE_SHA256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ],
)
def test_rfc7616_section_3_9_1_examples(challenge_text: str, expected: str) -> None:
    # RFC 7616 §3.9.1, end to end: parse the challenge, answer it with the RFC's cnonce.
    challenge = parse_challenge(challenge_text)
    assert challenge.qop == ["auth", "auth-int"]
    client = DigestClient(cnonce_factory=lambda: RFC7616_CNONCE)
    value = client.authorization(
        challenge, Credentials("Mufasa", "Circle of Life"), "GET", "/dir/index.html"
    )
    params = parse_challenges(value)[0].params  # same grammar: reuse the parser to read it back
    assert params["response"] == expected
    assert params["nc"] == "00000001"
    assert params["qop"] == "auth"
    assert params["cnonce"] == RFC7616_CNONCE
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert params["uri"] == "/dir/index.html"
    assert params["algorithm"] == challenge.algorithm
    assert "qop=auth," in value and "nc=00000001" in value  # tokens, not quoted (RFC 3261 §25.1)


def test_sha512_256_is_the_fips_truncated_hash() -> None:
    # RFC 7616 §3.9.2's SHA-512-256 example is known wrong (RFC errata 4897), so check the hash
    # itself against FIPS 180-4's "abc" vector, then the construction against hashlib.
    assert hashlib.new("sha512_256", b"abc").hexdigest() == (
        "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    )

    def h(s: str) -> str:
        return hashlib.new("sha512_256", s.encode()).hexdigest()

    ha1 = h("J\u00e4s\u00f8n Doe:api@example.org:Secret, or not?")
    ha2 = h("GET:/doe.json")
    expected = h(f"{ha1}:nonce1:00000001:cn:auth:{ha2}")
    got = compute_response(
        algorithm="SHA-512-256",
        username="J\u00e4s\u00f8n Doe",
        realm="api@example.org",
        password="Secret, or not?",
        nonce="nonce1",
        method="GET",
        uri="/doe.json",
        qop="auth",
        nc="00000001",
        cnonce="cn",
    )
    assert got == expected


def md5(s: str | bytes) -> str:
    return hashlib.md5(s.encode() if isinstance(s, str) else s).hexdigest()


def test_rfc2069_form_without_qop() -> None:
    # No qop in the challenge: response = H(H(A1):nonce:H(A2)), no cnonce/nc sent.
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    value = DigestClient().authorization(challenge, Credentials("u", "p"), "REGISTER", "sip:x")
    params = parse_challenges(value)[0].params
    assert params["response"] == md5(f"{md5('u:r:p')}:n:{md5('REGISTER:sip:x')}")
    assert "cnonce" not in params and "nc" not in params and "qop" not in params
    assert params["algorithm"] == "MD5"


def test_auth_int_hashes_the_body() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    client = DigestClient(cnonce_factory=lambda: "c")
    body = b"v=0\r\n"
    value = client.authorization(challenge, Credentials("u", "p"), "INVITE", "sip:b@h", body)
    params = parse_challenges(value)[0].params
    ha2 = md5(f"INVITE:sip:b@h:{md5(body)}")
    assert params["qop"] == "auth-int"
    assert params["response"] == md5(f"{md5('u:r:p')}:n:00000001:c:auth-int:{ha2}")


def test_auth_preferred_over_auth_int() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int,auth"')
    value = DigestClient().authorization(challenge, Credentials("u", "p"), "INVITE", "sip:b")
    assert parse_challenges(value)[0].params["qop"] == "auth"


def test_sess_algorithm() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop=auth, algorithm=md5-sess')
    assert challenge.algorithm == "MD5-sess"
    value = DigestClient(cnonce_factory=lambda: "c").authorization(
        challenge, Credentials("u", "p"), "INVITE", "sip:b"
    )
    params = parse_challenges(value)[0].params
    ha1 = md5(f"{md5('u:r:p')}:n:c")
    assert params["response"] == md5(f"{ha1}:n:00000001:c:auth:{md5('INVITE:sip:b')}")
    assert params["algorithm"] == "MD5-sess"


def test_userhash() -> None:
    # RFC 7616 §3.4.4: username parameter = H(username:realm), A1 still uses the real name.
    challenge = parse_challenge(
        'Digest realm="api@example.org", nonce="n", qop="auth", algorithm=SHA-256, userhash=true'
    )
    value = DigestClient(cnonce_factory=lambda: "c").authorization(
        challenge, Credentials("J\u00e4s\u00f8n Doe", "pw"), "GET", "/doe.json"
    )
    params = parse_challenges(value)[0].params
    sha = hashlib.sha256
    assert params["username"] == sha("J\u00e4s\u00f8n Doe:api@example.org".encode()).hexdigest()
    assert params["userhash"] == "true"
    assert params["response"] == compute_response(
        algorithm="SHA-256",
        username="J\u00e4s\u00f8n Doe",
        realm="api@example.org",
        password="pw",
        nonce="n",
        method="GET",
        uri="/doe.json",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )


# ---------------------------------------------------------------------------------------------
# Client state
# ---------------------------------------------------------------------------------------------


def test_nonce_count_increments_per_nonce() -> None:
    client = DigestClient()
    creds = Credentials("u", "p")
    a = parse_challenge('Digest realm="r", nonce="A", qop="auth"')
    b = parse_challenge('Digest realm="r", nonce="B", qop="auth"')

    def nc(ch: Challenge) -> str:
        return parse_challenges(client.authorization(ch, creds, "REGISTER", "sip:r"))[0].params[
            "nc"
        ]

    assert [nc(a), nc(a), nc(b), nc(a)] == ["00000001", "00000002", "00000001", "00000003"]
    assert client.nonce_count("A") == 3


def test_nonce_memory_is_bounded() -> None:
    client = DigestClient(max_nonces=2)
    creds = Credentials("u", "p")
    for nonce in ("1", "2", "3"):
        client.authorization(
            parse_challenge(f'Digest realm="r", nonce="{nonce}", qop=auth'), creds, "M", "u"
        )
    assert client.nonce_count("1") == 0
    assert client.nonce_count("3") == 1


def test_cnonce_is_random_hex() -> None:
    client = DigestClient()
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    c1 = parse_challenges(client.authorization(ch, Credentials("u", "p"), "M", "u"))[0].params
    c2 = parse_challenges(client.authorization(ch, Credentials("u", "p"), "M", "u"))[0].params
    assert c1["cnonce"] != c2["cnonce"]
    int(c1["cnonce"], 16)
    assert len(c1["cnonce"]) >= 16


def test_wrong_realm_credentials_rejected() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n"')
    with pytest.raises(AuthError):
        DigestClient().authorization(ch, Credentials("u", "p", realm="other"), "M", "u")
    DigestClient().authorization(ch, Credentials("u", "p", realm="r"), "M", "u")


def test_unsupported_algorithm_or_qop_rejected() -> None:
    with pytest.raises(AuthError):
        DigestClient().authorization(
            parse_challenge('Digest realm="r", nonce="n", algorithm=AKAv1-MD5'),
            Credentials("u", "p"),
            "M",
            "u",
        )
    with pytest.raises(AuthError):
        DigestClient().authorization(
            parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"'),
            Credentials("u", "p"),
            "M",
            "u",
        )


def test_quoting_of_username() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n"')
    value = DigestClient().authorization(ch, Credentials('a"b\\c', "p"), "M", "u")
    assert 'username="a\\"b\\\\c"' in value
    assert parse_challenges(value)[0].params["username"] == 'a"b\\c'


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def test_parse_is_robust() -> None:
    value = (
        'DIGEST  Realm = "a, b \\"c\\"" ,NONCE=abc/+==,\r\n\t qop="auth,auth-int" ,'
        ' Algorithm=sha-256 , stale=TRUE, domain="sip:a sip:b", foo=bar, opaque=""'
    )
    ch = parse_challenge(value)
    assert ch.scheme == "Digest"
    assert ch.realm == 'a, b "c"'
    assert ch.nonce == "abc/+=="
    assert ch.qop == ["auth", "auth-int"]
    assert ch.algorithm == "SHA-256"
    assert ch.stale is True
    assert ch.domain == ["sip:a", "sip:b"]
    assert ch.opaque == ""
    assert ch.params["foo"] == "bar"
    assert ch.userhash is False


def test_parse_defaults() -> None:
    ch = parse_challenge('Digest realm="r",nonce="n"')
    assert ch.algorithm == "MD5" and not ch.algorithm_given
    assert ch.qop == [] and ch.opaque is None and ch.stale is False


@pytest.mark.parametrize(
    "bad",
    [
        'Basic realm="r"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r, nonce="n"',
        "",
        '"Digest"',
        'realm="r", nonce="n"',
    ],
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(AuthError):
        parse_challenge(bad)
    assert issubclass(AuthError, ValueError)


@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_auth_error(value: str) -> None:
    try:
        parse_challenges(value)
        parse_challenge(value)
    except AuthError:
        pass
    choose_challenge([value])  # never raises: bad values are skipped


@given(
    realm=st.text(min_size=0, max_size=30),
    nonce=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)
def test_parse_round_trips_quoted_values(realm: str, nonce: str) -> None:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    ch = parse_challenge(f"Digest realm={q(realm)}, nonce={q(nonce)}, qop=auth")
    assert (ch.realm, ch.nonce, ch.qop) == (realm, nonce, ["auth"])


def test_several_challenges_in_one_value() -> None:
    value = 'Basic realm="x", Digest realm="r", nonce="1", algorithm=MD5, Digest realm="r", nonce="2", algorithm=SHA-256'
    found = parse_challenges(value)
    assert [c.nonce for c in found] == ["1", "2"]


def test_choose_prefers_sha256() -> None:
    values = [
        'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="2", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth"',
        "garbage ===",
        'Digest realm="r", nonce="4", algorithm=AKAv1-MD5',
    ]
    chosen = choose_challenge(values)
    assert chosen is not None and chosen.nonce == "3"
    chosen = choose_challenge(values[:2])
    assert chosen is not None and chosen.nonce == "2"
    # RFC 8760 §2.4's alternative: the topmost supported.
    chosen = choose_challenge(values, preference=None)
    assert chosen is not None and chosen.nonce == "1"
    assert choose_challenge([values[4]]) is None
    assert choose_challenge([]) is None
    assert choose_challenge(values, realm="nope") is None


def test_choose_one_per_realm_and_respond() -> None:
    values = [
        'Digest realm="proxy1", nonce="a", qop="auth"',
        'Digest realm="proxy2", nonce="b", qop="auth"',
        'Digest realm="proxy1", nonce="c", qop="auth", algorithm=SHA-256',
    ]
    chosen = choose_challenges(values)
    assert [(c.realm, c.nonce) for c in chosen] == [("proxy1", "c"), ("proxy2", "b")]
    client = DigestClient()
    answers = client.respond(
        values,
        [Credentials("u2", "p2", realm="proxy2"), Credentials("any", "p")],
        "INVITE",
        "sip:b@x",
    )
    users = [parse_challenges(a)[0].params["username"] for a in answers]
    assert users == ["any", "u2"]
    assert client.respond(values, Credentials("u", "p", realm="zzz"), "INVITE", "sip:b") == []


# ---------------------------------------------------------------------------------------------
# Real peer: sipp as a UAS that challenges and verifies (<verifyauth>), over loopback.
# ---------------------------------------------------------------------------------------------

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Msg:
    """Just enough SIP parsing for this test (the real parser lives in sip/message.py)."""

    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))
        parts = self.start.split(" ", 2)
        self.status = int(parts[1]) if parts[0] == "SIP/2.0" else 0
        self.method = "" if self.status else parts[0]

    def get(self, name: str) -> str:
        return next(v for n, v in self.headers if n == name.lower())

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]

    @property
    def cseq(self) -> tuple[int, str]:
        num, method = self.get("cseq").split()
        return int(num), method


class _Uac:
    """A tiny hand-made UDP UAC: INVITE, ACK, answer BYE. Bounded in time everywhere."""

    SDP = (
        b"v=0\r\no=test 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )

    def __init__(self, peer_port: int, deadline: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.peer = ("127.0.0.1", peer_port)
        self.deadline = deadline
        self.call_id = secrets.token_hex(8) + "@127.0.0.1"
        self.from_tag = secrets.token_hex(4)
        self.ruri = f"sip:service@127.0.0.1:{peer_port}"

    def close(self) -> None:
        self.sock.close()

    def _request(
        self,
        method: str,
        cseq: int,
        branch: str,
        to_tag: str | None = None,
        extra: list[str] | None = None,
        body: bytes = b"",
    ) -> bytes:
        to = f"<{self.ruri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {self.ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:alice@127.0.0.1>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:alice@127.0.0.1:{self.port}>",
            *(extra or []),
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _recv(self, timeout: float) -> _Msg | None:
        self.sock.settimeout(max(0.01, min(timeout, self.deadline - time.monotonic())))
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return _Msg(data)

    def invite(self, cseq: int, branch: str, extra: list[str] | None = None) -> _Msg:
        """Send an INVITE, retransmitting (Timer A-like, 500 ms) until a final response with our
        CSeq arrives; sipp may still be starting when the first one leaves."""
        data = self._request("INVITE", cseq, branch, extra=extra, body=self.SDP)
        while time.monotonic() < self.deadline:
            self.sock.sendto(data, self.peer)
            resend_at = time.monotonic() + 0.5
            while time.monotonic() < min(resend_at, self.deadline):
                msg = self._recv(resend_at - time.monotonic())
                if msg is None or msg.status < 200 or msg.cseq != (cseq, "INVITE"):
                    continue
                return msg
        raise AssertionError("no final response from sipp")

    def ack(self, cseq: int, branch: str, to_tag: str) -> None:
        self.sock.sendto(self._request("ACK", cseq, branch, to_tag), self.peer)

    def answer_bye(self, cseq: int, to_tag: str) -> None:
        """Wait for sipp's BYE and answer 200; re-ACK a retransmitted 200 for the INVITE."""
        while time.monotonic() < self.deadline:
            msg = self._recv(1.0)
            if msg is None:
                continue
            if msg.status == 200 and msg.cseq == (cseq, "INVITE"):
                self.ack(cseq, "z9hG4bK" + secrets.token_hex(6), to_tag)
                continue
            if msg.method == "BYE":
                reply = [
                    "SIP/2.0 200 OK",
                    *(f"Via: {v}" for v in msg.all("via")),
                    f"From: {msg.get('from')}",
                    f"To: {msg.get('to')}",
                    f"Call-ID: {msg.get('call-id')}",
                    f"CSeq: {msg.get('cseq')}",
                    "Content-Length: 0",
                ]
                self.sock.sendto(("\r\n".join(reply) + "\r\n\r\n").encode(), self.peer)
                return
        raise AssertionError("sipp never sent BYE")


def _to_tag(msg: _Msg) -> str:
    return msg.get("to").split("tag=", 1)[1].split(";")[0]


def _call_with_auth(
    sipp_port: int, status: int, password: str, answer_header: str, deadline: float
) -> _Msg:
    """INVITE → 401/407 → ACK → INVITE with credentials in ``answer_header`` → final response
    (ACKed, and for a 200 the BYE from sipp answered). Returns the final response to the second
    INVITE."""
    uac = _Uac(sipp_port, deadline)
    try:
        b1 = "z9hG4bK" + secrets.token_hex(6)
        first = uac.invite(1, b1)
        assert first.status == status, first.start
        uac.ack(1, b1, _to_tag(first))  # RFC 3261 §17.1.1.3: same branch for a non-2xx ACK
        challenge_header = "www-authenticate" if status == 401 else "proxy-authenticate"
        challenge = choose_challenge(first.all(challenge_header))
        assert challenge is not None
        assert challenge.qop == ["auth"] and challenge.algorithm == "MD5"
        value = DigestClient().authorization(
            challenge, Credentials("alice", password), "INVITE", uac.ruri, uac.SDP
        )
        b2 = "z9hG4bK" + secrets.token_hex(6)
        final = uac.invite(2, b2, extra=[f"{answer_header}: {value}"])
        if final.status == 200:
            uac.ack(2, "z9hG4bK" + secrets.token_hex(6), _to_tag(final))  # 2xx ACK: new branch
            assert b"telephone-event/8000" in final.body
            uac.answer_bye(2, _to_tag(final))
        else:
            uac.ack(2, b2, _to_tag(final))
        return final
    finally:
        uac.close()


@pytest.mark.peer
@pytest.mark.skipif(SIPP is None, reason="sipp not on PATH")
@pytest.mark.parametrize(
    ("status", "password", "answer_header", "expected"),
    [
        (401, "secret", "Authorization", 200),  # sipp's <verifyauth> accepts our digest
        (401, "wrong", "Authorization", 403),  # ...and rejects a wrong password
        # sipp cannot verify Proxy-Authorization (its <verifyauth> reads Authorization only):
        # uas_auth_407.xml checks the header's presence and shape.
        (407, "secret", "Proxy-Authorization", 200),
        (407, "secret", "Authorization", 403),
    ],
)
def test_sipp_verifies_our_credentials(
    tmp_path: Path, status: int, password: str, answer_header: str, expected: int
) -> None:
    assert SIPP is not None
    port, media_port = _free_udp_port(), _free_udp_port()
    scenario = SCENARIOS / f"uas_auth_{status}.xml"
    log = (tmp_path / "sipp.out").open("wb")
    proc = subprocess.Popen(
        [
            SIPP,
            "-sf",
            str(scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-mp",
            str(media_port),
            "-m",
            "1",
            "-timeout",
            "20s",
            "-nostdin",
        ],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TERM": "dumb"},
    )
    try:
        final = _call_with_auth(port, status, password, answer_header, time.monotonic() + 15)
        assert final.status == expected, final.start
        rc = proc.wait(timeout=10)
        assert rc == 0, (tmp_path / "sipp.out").read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
