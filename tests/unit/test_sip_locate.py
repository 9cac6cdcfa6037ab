"""RFC 3263 server location: the sans-I/O Locator with hand-made answers, and resolve() over
loopback only (IP literals, localhost, hosts file, and a tiny DNS server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import dns.asyncresolver
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.aio.resolver import read_hosts, resolve
from sip.locate import LocateError, Locator, Naptr, Query, Srv, Target, order_srv
from tests.peers.dns_server import start_dns

Zone = dict[tuple[str, str], list[object]]


def run(plan: Locator, zone: Zone, log: list[Query] | None = None) -> list[Target]:
    """Serial driver: answer each query from ``zone`` (absent = empty answer)."""
    for _ in range(50):
        q = plan.next_query()
        if q is None:
            break
        if log is not None:
            log.append(q)
        plan.feed(q.name, q.rdtype, zone.get((q.name, q.rdtype), []))
    return plan.targets()


def run_parallel(plan: Locator, zone: Zone) -> tuple[list[Target], list[list[Query]]]:
    """Batch driver: every query of a step at once, as resolve() does."""
    rounds: list[list[Query]] = []
    for _ in range(10):
        batch = plan.next_queries()
        if not batch:
            break
        rounds.append(batch)
        for q in batch:
            plan.feed(q.name, q.rdtype, zone.get((q.name, q.rdtype), []))
    return plan.targets(), rounds


EXAMPLE: Zone = {
    ("example.com", "NAPTR"): [
        Naptr(90, 50, "s", "SIP+D2T", "", "_sip._tcp.example.com."),
        Naptr(100, 50, "s", "SIP+D2U", "", "_sip._udp.example.com."),
        Naptr(50, 50, "s", "SIPS+D2T", "", "_sips._tcp.example.com."),
        Naptr(80, 50, "s", "SIP+D2S", "", "_sip._sctp.example.com."),
    ],
    ("_sip._tcp.example.com", "SRV"): [
        Srv(0, 1, 5060, "tcp1.example.com."),
        Srv(1, 1, 5070, "tcp2.example.com."),
    ],
    ("_sip._udp.example.com", "SRV"): [Srv(0, 0, 5060, "udp1.example.com")],
    ("_sips._tcp.example.com", "SRV"): [Srv(0, 0, 5061, "tls1.example.com")],
    ("tcp1.example.com", "A"): ["192.0.2.1"],
    ("tcp1.example.com", "AAAA"): ["2001:db8::1"],
    ("tcp2.example.com", "A"): ["192.0.2.2"],
    ("udp1.example.com", "A"): ["192.0.2.3", "192.0.2.4"],
    ("tls1.example.com", "A"): ["192.0.2.5"],
    ("example.com", "A"): ["192.0.2.99"],
}


# -- step 1: IP literals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "transport", "secure", "expected"),
    [
        ("192.0.2.7", None, None, False, Target("192.0.2.7", 5060, "udp")),
        ("192.0.2.7", 5080, None, False, Target("192.0.2.7", 5080, "udp")),
        ("192.0.2.7", None, "TCP", False, Target("192.0.2.7", 5060, "tcp")),
        ("192.0.2.7", None, None, True, Target("192.0.2.7", 5061, "tls")),
        ("192.0.2.7", None, "tcp", True, Target("192.0.2.7", 5061, "tls")),
        ("[2001:db8::7]", None, None, False, Target("2001:db8::7", 5060, "udp")),
        ("2001:DB8::7", 5062, "tls", False, Target("2001:db8::7", 5062, "tls")),
    ],
)
def test_ip_literal_needs_no_dns(
    host: str, port: int | None, transport: str | None, secure: bool, expected: Target
) -> None:
    plan = Locator(host, port, transport, secure, supported=("udp", "tcp", "tls"))
    assert plan.next_query() is None
    assert plan.done
    assert plan.targets() == [expected]


# -- step 2: explicit port -------------------------------------------------------------------


def test_explicit_port_uses_only_address_records() -> None:
    log: list[Query] = []
    plan = Locator("tcp1.example.com", 5099, None, False)
    assert run(plan, EXAMPLE, log) == [
        Target("192.0.2.1", 5099, "udp"),
        Target("2001:db8::1", 5099, "udp"),
    ]
    assert log == [Query("tcp1.example.com", "A"), Query("tcp1.example.com", "AAAA")]


def test_explicit_port_with_transport_and_ipv4_only() -> None:
    plan = Locator("tcp1.example.com", 5099, "tcp", False, address_types=("A",))
    assert run(plan, EXAMPLE) == [Target("192.0.2.1", 5099, "tcp")]


# -- step 3: explicit transport --------------------------------------------------------------


def test_explicit_transport_queries_its_srv() -> None:
    log: list[Query] = []
    plan = Locator("example.com", None, "tcp", False, rng=random.Random(1))
    assert run(plan, EXAMPLE, log) == [
        Target("192.0.2.1", 5060, "tcp"),
        Target("2001:db8::1", 5060, "tcp"),
        Target("192.0.2.2", 5070, "tcp"),
    ]
    assert log[0] == Query("_sip._tcp.example.com", "SRV")
    assert Query("example.com", "NAPTR") not in log


def test_explicit_transport_without_srv_falls_back_to_a() -> None:
    plan = Locator("example.com", None, "udp", False)
    zone = {k: v for k, v in EXAMPLE.items() if k != ("_sip._udp.example.com", "SRV")}
    assert run(plan, zone) == [Target("192.0.2.99", 5060, "udp")]


def test_sips_with_transport_tcp_queries_sips_srv() -> None:
    plan = Locator("example.com", None, "tcp", True, supported=("udp", "tcp", "tls"))
    assert run(plan, EXAMPLE) == [Target("192.0.2.5", 5061, "tls")]


# -- step 4: NAPTR ---------------------------------------------------------------------------


def test_naptr_srv_a_chain_in_order() -> None:
    # SIPS+D2T (order 50) dropped: TLS not supported; SIP+D2S dropped: SCTP not supported.
    plan = Locator("example.com", None, None, False, rng=random.Random(0))
    targets, rounds = run_parallel(plan, EXAMPLE)
    assert targets == [
        Target("192.0.2.1", 5060, "tcp"),
        Target("2001:db8::1", 5060, "tcp"),
        Target("192.0.2.2", 5070, "tcp"),
        Target("192.0.2.3", 5060, "udp"),
        Target("192.0.2.4", 5060, "udp"),
    ]
    assert rounds[0] == [Query("example.com", "NAPTR")]
    assert set(rounds[1]) == {
        Query("_sip._tcp.example.com", "SRV"),
        Query("_sip._udp.example.com", "SRV"),
    }
    assert {q.rdtype for q in rounds[2]} == {"A", "AAAA"}
    assert len(rounds) == 3


def test_naptr_with_tls_supported_prefers_lowest_order() -> None:
    plan = Locator("example.com", supported=("udp", "tcp", "tls"), rng=random.Random(0))
    targets = run(plan, EXAMPLE)
    assert targets[0] == Target("192.0.2.5", 5061, "tls")
    assert [t.transport for t in targets] == ["tls", "tcp", "tcp", "tcp", "udp", "udp"]


def test_naptr_preference_breaks_order_ties() -> None:
    zone = dict(EXAMPLE)
    zone[("example.com", "NAPTR")] = [
        Naptr(10, 20, "S", "SIP+D2T", "", "_sip._tcp.example.com"),
        Naptr(10, 10, "S", "sip+d2u", "", "_sip._udp.example.com"),
        Naptr(10, 5, "u", "SIP+D2U", "!^.*$!sip:x@y!", ""),  # not an "s" record: ignored
    ]
    targets = run(Locator("example.com", rng=random.Random(0)), zone)
    assert [t.transport for t in targets] == ["udp", "udp", "tcp", "tcp", "tcp"]


def test_sips_uses_only_sips_naptr() -> None:
    plan = Locator("example.com", secure=True, supported=("udp", "tcp", "tls"))
    assert run(plan, EXAMPLE) == [Target("192.0.2.5", 5061, "tls")]


def test_no_naptr_queries_srv_for_each_supported_transport() -> None:
    zone = {k: v for k, v in EXAMPLE.items() if k[1] != "NAPTR"}
    log: list[Query] = []
    plan = Locator("example.com", supported=("tcp", "udp"), rng=random.Random(0))
    targets = run(plan, zone, log)
    assert log[:3] == [
        Query("example.com", "NAPTR"),
        Query("_sip._tcp.example.com", "SRV"),
        Query("_sip._udp.example.com", "SRV"),
    ]
    assert [t.transport for t in targets] == ["tcp", "tcp", "tcp", "udp", "udp"]


def test_unusable_naptr_treated_as_none() -> None:
    zone = {k: v for k, v in EXAMPLE.items() if k[1] != "NAPTR"}
    zone[("example.com", "NAPTR")] = [Naptr(1, 1, "s", "SIP+D2S", "", "_sip._sctp.example.com")]
    targets = run(Locator("example.com", rng=random.Random(0)), zone)
    assert [t.transport for t in targets] == ["udp", "udp", "tcp", "tcp", "tcp"]


def test_nothing_but_a_records() -> None:
    zone: Zone = {("example.net", "A"): ["198.51.100.1"], ("example.net", "AAAA"): ["2001:db8::9"]}
    assert run(Locator("example.net."), zone) == [
        Target("198.51.100.1", 5060, "udp"),
        Target("2001:db8::9", 5060, "udp"),
    ]
    # RFC 3263 §4.2: a sips URI with no SRV: TLS to port 5061.
    assert run(Locator("EXAMPLE.net", secure=True, supported=("tcp", "tls")), zone) == [
        Target("198.51.100.1", 5061, "tls"),
        Target("2001:db8::9", 5061, "tls"),
    ]
    # UDP not supported: the first supported transport.
    assert run(Locator("example.net", supported=("tcp",)), zone) == [
        Target("198.51.100.1", 5060, "tcp"),
        Target("2001:db8::9", 5060, "tcp"),
    ]


def test_nxdomain_gives_no_targets() -> None:
    assert run(Locator("nowhere.invalid"), {}) == []


def test_srv_dot_target_means_no_service_and_no_fallback() -> None:
    zone: Zone = {
        ("_sip._udp.example.org", "SRV"): [Srv(0, 0, 0, ".")],
        ("example.org", "A"): ["203.0.113.1"],
    }
    assert run(Locator("example.org", transport="udp"), zone) == []


def test_srv_target_that_is_an_ip_literal() -> None:
    zone: Zone = {("_sip._udp.example.org", "SRV"): [Srv(0, 0, 5070, "203.0.113.9")]}
    assert run(Locator("example.org", transport="udp"), zone) == [
        Target("203.0.113.9", 5070, "udp")
    ]


def test_unasked_records_are_used_and_not_queried() -> None:
    # The additional section of an SRV answer often holds the targets' addresses.
    plan = Locator("example.com", None, "tcp", False, address_types=("A",))
    plan.feed("tcp1.example.com.", "a", ["192.0.2.1"])
    log: list[Query] = []
    targets = run(plan, EXAMPLE, log)
    assert Query("tcp1.example.com", "A") not in log
    assert targets == [Target("192.0.2.1", 5060, "tcp"), Target("192.0.2.2", 5070, "tcp")]


def test_duplicate_targets_removed_and_targets_before_done_raises() -> None:
    zone: Zone = {
        ("_sip._udp.dup.test", "SRV"): [
            Srv(0, 0, 5060, "a.dup.test"),
            Srv(1, 0, 5060, "b.dup.test"),
        ],
        ("a.dup.test", "A"): ["192.0.2.1"],
        ("b.dup.test", "A"): ["192.0.2.1"],
    }
    plan = Locator("dup.test", transport="udp", address_types=("A",))
    with pytest.raises(LocateError):
        plan.targets()
    assert run(plan, zone) == [Target("192.0.2.1", 5060, "udp")]


def test_invalid_combinations() -> None:
    with pytest.raises(LocateError):
        Locator("example.com", transport="udp", secure=True, supported=("udp", "tls"))
    with pytest.raises(LocateError):
        Locator("example.com", transport="sctp")
    with pytest.raises(LocateError):
        Locator("example.com", secure=True)  # TLS not in supported
    assert issubclass(LocateError, ValueError)


def test_plan_is_bounded_against_huge_answers() -> None:
    zone: Zone = {
        ("_sip._udp.big.test", "SRV"): [Srv(0, 1, 5060, f"h{i}.big.test") for i in range(500)],
    }
    log: list[Query] = []
    run(Locator("big.test", transport="udp"), zone, log)
    assert len(log) <= 1 + 2 * 16


# -- RFC 2782 ordering -----------------------------------------------------------------------


def test_srv_priority_then_weight() -> None:
    recs = [
        Srv(20, 100, 1, "low-priority"),
        Srv(10, 0, 1, "zero-weight"),
        Srv(10, 60, 1, "heavy"),
        Srv(10, 40, 1, "light"),
    ]
    counts: Counter[str] = Counter()
    rng = random.Random(12345)
    for _ in range(2000):
        ordered = order_srv(recs, rng)
        assert ordered[-1].target == "low-priority"  # priority 20 always after priority 10
        assert len(ordered) == 4
        counts[ordered[0].target] += 1
    # Weighted choice: heavy ~60 %, light ~40 %, zero-weight rarely first (only when 0 is drawn).
    assert 1050 < counts["heavy"] < 1350
    assert 650 < counts["light"] < 950
    assert counts["zero-weight"] < 60


def test_srv_order_is_reproducible_with_seeded_rng() -> None:
    recs = [Srv(0, w, 5060, f"t{w}") for w in (1, 2, 3, 4, 5)]
    a = order_srv(recs, random.Random(7))
    b = order_srv(recs, random.Random(7))
    assert a == b
    assert sorted(r.target for r in a) == sorted(r.target for r in recs)


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 65535), st.integers(1, 65535)),
        max_size=12,
    ),
    st.integers(),
)
def test_srv_order_is_a_priority_sorted_permutation(
    specs: list[tuple[int, int, int]], seed: int
) -> None:
    recs = [Srv(p, w, port, f"h{i}.test") for i, (p, w, port) in enumerate(specs)]
    ordered = order_srv(recs, random.Random(seed))
    assert sorted(ordered, key=id) == sorted(recs, key=id)
    assert [r.priority for r in ordered] == sorted(r.priority for r in recs)


def test_srv_all_zero_weights() -> None:
    recs = [Srv(0, 0, 5060, f"z{i}") for i in range(4)]
    assert len(order_srv(recs, random.Random(3))) == 4


# ---------------------------------------------------------------------------------------------
# resolve(): loopback only. No real DNS server is ever queried: every test passes a resolver
# pointed at 127.0.0.1 (a tiny in-test DNS server, or a port nobody answers on).
# ---------------------------------------------------------------------------------------------


def _silent_resolver() -> dns.asyncresolver.Resolver:
    """A resolver pointed at a loopback port where nothing answers: DNS always times out."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    return resolver


ZONE_TEXT: dict[tuple[str, str], list[str]] = {
    ("sip.test", "NAPTR"): [
        '10 10 "s" "SIP+D2U" "" _sip._udp.sip.test.',
        '20 10 "s" "SIP+D2T" "" _sip._tcp.sip.test.',
    ],
    ("_sip._udp.sip.test", "SRV"): ["0 10 5070 pbx1.sip.test.", "1 10 5080 pbx2.sip.test."],
    ("_sip._tcp.sip.test", "SRV"): ["0 10 5090 pbx1.sip.test."],
    ("pbx1.sip.test", "A"): ["127.0.0.11"],
    ("pbx1.sip.test", "AAAA"): ["::1"],
    ("pbx2.sip.test", "A"): ["127.0.0.12"],
}


async def test_resolve_ip_literals_no_dns() -> None:
    resolver = _silent_resolver()
    assert await resolve("127.0.0.1", None, None, False, resolver=resolver) == [
        Target("127.0.0.1", 5060, "udp")
    ]
    assert await resolve("[::1]", 5080, "tcp", False, resolver=resolver) == [
        Target("::1", 5080, "tcp")
    ]
    assert await resolve(
        "127.0.0.1", None, None, True, supported=("udp", "tcp", "tls"), resolver=resolver
    ) == [Target("127.0.0.1", 5061, "tls")]


async def test_resolve_localhost_without_dns() -> None:
    # localhost is answered locally (RFC 6761 §6.3 / hosts file): the silent resolver would
    # make any DNS query time out, so a quick answer proves none was made.
    resolver = _silent_resolver()
    targets = await asyncio.wait_for(
        resolve("localhost", None, None, False, resolver=resolver, timeout=5), 3
    )
    assert targets and targets[0] == Target("127.0.0.1", 5060, "udp")
    assert all(t.port == 5060 and t.transport == "udp" for t in targets)
    targets = await asyncio.wait_for(
        resolve("localhost", 5099, "tcp", False, resolver=resolver, timeout=5), 3
    )
    assert targets[0] == Target("127.0.0.1", 5099, "tcp")


async def test_resolve_names_from_hosts_file(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n127.0.0.42 gw.local gw  # trailing\n::1 gw.local\n")
    assert read_hosts(str(hosts))["gw"] == ["127.0.0.42"]
    targets = await asyncio.wait_for(
        resolve("GW.local", None, None, False, resolver=_silent_resolver(), hosts_path=str(hosts)),
        3,
    )
    assert targets == [Target("127.0.0.42", 5060, "udp"), Target("::1", 5060, "udp")]


async def test_resolve_naptr_srv_a_against_loopback_dns() -> None:
    server, transport, resolver = await start_dns(ZONE_TEXT)
    try:
        targets = await resolve(
            "sip.test",
            None,
            None,
            False,
            resolver=resolver,
            rng=random.Random(0),
            timeout=5,
            system_fallback=False,
        )
    finally:
        transport.close()
    assert targets == [
        Target("127.0.0.11", 5070, "udp"),
        Target("::1", 5070, "udp"),
        Target("127.0.0.12", 5080, "udp"),
        Target("127.0.0.11", 5090, "tcp"),
        Target("::1", 5090, "tcp"),
    ]
    assert server.queries[0] == ("sip.test", "NAPTR")
    assert {q for q in server.queries if q[1] == "SRV"} == {
        ("_sip._udp.sip.test", "SRV"),
        ("_sip._tcp.sip.test", "SRV"),
    }
    assert len(server.queries) == len(set(server.queries))  # nothing asked twice


async def test_resolve_uses_additional_section() -> None:
    server, transport, resolver = await start_dns(ZONE_TEXT, additional=True)
    try:
        targets = await resolve(
            "sip.test", None, "udp", False, resolver=resolver, timeout=5, system_fallback=False
        )
    finally:
        transport.close()
    assert {t.host for t in targets} == {"127.0.0.11", "::1", "127.0.0.12"}
    assert ("pbx1.sip.test", "A") not in server.queries  # came with the SRV answer
    assert ("pbx1.sip.test", "AAAA") in server.queries


async def test_resolve_nxdomain_is_empty() -> None:
    server, transport, resolver = await start_dns(ZONE_TEXT)
    try:
        targets = await resolve(
            "nothing.sip.test.invalid",
            None,
            None,
            False,
            resolver=resolver,
            timeout=3,
            system_fallback=False,  # getaddrinfo would ask the real DNS: loopback only here
        )
    finally:
        transport.close()
    assert targets == []
    kinds = [q[1] for q in server.queries]
    assert kinds[0] == "NAPTR" and "SRV" in kinds and "A" in kinds  # fell all the way back


async def test_resolve_is_bounded_when_dns_is_silent() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    targets = await asyncio.wait_for(
        resolve(
            "unanswered.invalid",
            None,
            "udp",
            False,
            resolver=_silent_resolver(),
            timeout=0.5,
            system_fallback=False,
        ),
        5,
    )
    assert loop.time() - start < 4  # generous: the bound is 0.5 s plus scheduling
    assert targets == []
