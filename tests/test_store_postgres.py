"""The store in PostgreSQL end to end (issue 15): a server with ``store_url =
"postgresql://..."`` places calls to sipp callees through the Plivo API; records and callbacks
land in a throw-away PostgreSQL cluster. Two servers share one database: when one is killed
(SIGKILL), the survivor ends its calls (BYE from the stored dialogs) and posts their hangup
callbacks exactly once, and leaves its own live call alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from softswitch.store import SqlStore, open_store
from tests.conftest import needs_sipp, wait_until
from tests.peers import plivo_api
from tests.peers.plivo_api import (
    kill9,
    make_config,
    sdk,
    sdk_client,
    serve_subprocess,
    sig_ok,
    sipp_done,
    sipp_messages,
    start_server,
)
from tests.peers.webhooks import WebhookReceiver

pytestmark = [pytest.mark.peer, needs_sipp]

receiver = plivo_api.receiver
sdk_base = plivo_api.sdk_base


async def _answered(c: Any, receiver: WebhookReceiver, to: str, **kw: Any) -> str:
    resp = await sdk(
        c.calls.create,
        from_="1000",
        to_=to,
        answer_url=receiver.url("/answer"),
        hangup_url=receiver.url("/hangup"),
        **kw,
    )
    answer = await receiver.wait_for(
        lambda h: h.path == "/answer" and h.params["RequestUUID"] == resp.request_uuid, timeout=10
    )
    return str(answer[0].params["CallUUID"])


async def test_api_call_records_and_callbacks_land_in_postgresql(
    sipp: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver, postgres_url: str
) -> None:
    peer = sipp("uas_answer.xml")
    cfg = make_config(tmp_path, store_url=postgres_url, node_id="n1")
    server = await start_server(cfg, sdk_base)
    reader = open_store(postgres_url, node_id="reader")
    try:
        assert type(server.store).__name__ == "PostgresStore"
        c = sdk_client(server.base_url)
        uuid = await _answered(c, receiver, peer.uri, ring_url=receiver.url("/ring"))
        live = reader.get_call(plivo_api.AUTH_ID, uuid)
        assert live is not None and live["call_status"] == "in-progress"
        assert reader.call_owner(uuid) == "n1"
        await wait_until(
            lambda: [u for u, _ in open_dialogs(postgres_url, "n1")] == [uuid], 5, what="dialog"
        )
        await sdk(c.calls.delete, uuid)
        hang = await receiver.wait_hangup(uuid, timeout=10)
        assert hang.params["CallStatus"] == "completed"
        await sipp_done(peer)
        # the CDR the API serves is PostgreSQL's row
        rec = await sdk(c.calls.get, uuid)
        assert rec.call_status == "completed" and rec.hangup_source == "API Request"
        row = reader.get_call(plivo_api.AUTH_ID, uuid)
        assert row is not None and row["call_status"] == "completed" and row["bill_duration"] >= 0
        assert row["hangup_cause_name"] and row["extra"] is not None

        def delivered() -> bool:
            events = {d["event"]: d["status"] for d in reader.list_deliveries(uuid)}
            return events.get("hangup") == "delivered" and events.get("ring") == "delivered"

        await wait_until(delivered, 5, what="ring and hangup delivered")
        assert reader.list_attempts(reader.list_deliveries(uuid)[0]["id"])
        assert open_dialogs(postgres_url, "n1") == []  # the ended call forgot its dialog
        sig_ok(receiver)
    finally:
        reader.close()
        await server.stop(mode="hangup", drain_timeout_s=1.0)
    after = open_store(postgres_url, node_id="reader")
    try:
        assert "n1" not in after.live_nodes()  # a clean stop gives its lease back
    finally:
        after.close()


def open_dialogs(url: str, node: str) -> list[tuple[str, dict[str, Any]]]:
    """The stored dialogs of one node's live calls (read as that node, without its lease)."""
    store: SqlStore = open_store(url, node_id=node)
    try:
        return store.live_dialogs()
    finally:
        store.close()


async def test_survivor_ends_a_killed_nodes_calls_and_posts_their_hangups_once(
    sipp: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver, postgres_url: str
) -> None:
    dead_peers = [sipp("uas_answer.xml"), sipp("uas_answer.xml")]  # exit 0 only after a BYE
    own_peer = sipp("uas_answer.xml")
    conf = tmp_path / "n1.toml"
    conf.write_text(f'store_url = "{postgres_url}"\nnode_id = "n1"\nnode_lease_s = 1.0\n')
    n1_dir = tmp_path / "n1"
    n1_dir.mkdir()
    proc, n1_base, _ = await serve_subprocess(n1_dir, n1_dir / "calls.db", "--config", str(conf))
    survivor = None
    try:
        n2_cfg = make_config(tmp_path, store_url=postgres_url, node_id="n2", node_lease_s=1.0)
        survivor = await start_server(n2_cfg, sdk_base)
        # n1's answered calls, their dialogs stored; one answered call of the survivor's own
        sdk_base(n1_base)
        c1 = sdk_client(n1_base)
        dead_uuids = [await _answered(c1, receiver, p.uri) for p in dead_peers]
        await wait_until(
            lambda: {u for u, _ in open_dialogs(postgres_url, "n1")} == set(dead_uuids),
            5,
            what="n1's dialogs",
        )
        sdk_base(survivor.base_url)
        c2 = sdk_client(survivor.base_url)
        own = await _answered(c2, receiver, own_peer.uri)
    finally:
        await kill9(proc)
    try:
        assert survivor is not None
        # within a lease and a renewal period the survivor notices and takes the calls over
        await sipp_done(*dead_peers)  # each callee of the dead node got its BYE
        for peer in dead_peers:
            bye = next(m for m in sipp_messages(peer).split("\n\n") if "BYE sip:" in m)
            assert 'Reason: Q.850;cause=41;text="NORMAL_TEMPORARY_FAILURE"' in bye
        for uuid in dead_uuids:
            hang = await receiver.wait_hangup(uuid, timeout=10)
            assert hang.params["CallStatus"] == "completed"
            rec = survivor.store.get_call(plivo_api.AUTH_ID, uuid)
            assert rec is not None and rec["hangup_source"] == "Error"
            assert survivor.store.call_owner(uuid) == "n2"
        # the survivor's own call is untouched, and stays its own
        assert own_peer.proc.poll() is None
        assert own in survivor.manager.calls  # type: ignore[union-attr]
        own_rec = survivor.store.get_call(plivo_api.AUTH_ID, own)
        assert own_rec is not None and own_rec["call_status"] == "in-progress"
        assert "n1" not in survivor.store.live_nodes()
        await asyncio.sleep(1.0)  # a duplicate callback (a second takeover) would come now
        hangups = [h.params["CallUUID"] for h in receiver.of("/hangup")]
        assert sorted(hangups) == sorted(dead_uuids)
        await sdk(c2.calls.delete, own)
        await receiver.wait_hangup(own, timeout=10)
        await sipp_done(own_peer)
        sig_ok(receiver)
    finally:
        if survivor is not None:
            await survivor.stop(mode="hangup", drain_timeout_s=1.0)
