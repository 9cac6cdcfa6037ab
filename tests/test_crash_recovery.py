"""No orphan legs after a crash (issue 13): ``softswitch serve`` killed with SIGKILL during
answered calls to real callees (sipp and baresip on loopback); the next start sends each
callee a BYE from the dialog the dead process stored, then closes the records and posts the
one hangup callback of each call as before."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from softswitch.store import CallStore
from tests.conftest import needs_sipp, wait_until
from tests.peers import baresip as baresip_peer
from tests.peers import plivo_api
from tests.peers.baresip import needs_baresip
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

receiver = plivo_api.receiver
sdk_base = plivo_api.sdk_base
baresip = baresip_peer.baresip


def _delivered(store: CallStore, call_uuid: str) -> bool:
    rows = store._db.execute(
        "SELECT status FROM webhook_deliveries WHERE call_uuid = ? AND event = 'hangup'",
        (call_uuid,),
    ).fetchall()
    return bool(rows) and all(row["status"] == "delivered" for row in rows)


async def _answered(c: Any, receiver: WebhookReceiver, to: str) -> str:
    resp = await sdk(
        c.calls.create,
        from_="1000",
        to_=to,
        answer_url=receiver.url("/answer"),
        hangup_url=receiver.url("/hangup"),
    )
    answer = await receiver.wait_for(
        lambda h: h.path == "/answer" and h.params["RequestUUID"] == resp.request_uuid, timeout=10
    )
    return str(answer[0].params["CallUUID"])


@needs_sipp
@needs_baresip
async def test_restart_after_kill_byes_every_callee_left_in_the_call(
    sipp: Any, baresip: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver
) -> None:
    sipp_peers = [sipp("uas_answer.xml"), sipp("uas_answer.xml")]  # exit 0 only after a BYE
    bare = baresip()
    db = tmp_path / "crash.db"
    proc, base, sip_port = await serve_subprocess(tmp_path, db)
    sdk_base(base)
    try:
        c = sdk_client(base)
        uuids = [await _answered(c, receiver, peer.uri) for peer in (*sipp_peers, bare)]
        # the answered calls' dialogs are in the store before anything else happens
        reader = CallStore(str(db), checkpoint_interval_s=0)
        try:
            await wait_until(lambda: len(reader.live_dialogs()) == 3, 5, what="3 stored dialogs")
            stored = dict(reader.live_dialogs())
        finally:
            reader.close()
        assert set(stored) == set(uuids)
    finally:
        await kill9(proc)
    killed_at = time.monotonic()
    assert bare.wait_for("Call established", 0.1) is not None
    assert bare.wait_for("session closed", 0.5) is None  # still in the call
    assert not receiver.of("/hangup")
    assert all(peer.proc.poll() is None for peer in sipp_peers)  # still in the call

    # restarted on the same SIP port, as a production server is: sipp (unlike baresip) answers
    # a request of a call at the address the call's INVITE came from, not at its Via
    server = await start_server(make_config(tmp_path, db_path=str(db), sip_port=sip_port), sdk_base)
    try:
        assert server.interrupted == 3
        assert server.recovered_byes == dict.fromkeys(uuids, 200)
        await sipp_done(*sipp_peers)  # each sipp callee got its BYE and answered 200
        for peer, uuid in zip(sipp_peers, uuids, strict=False):
            bye = next(m for m in sipp_messages(peer).split("\n\n") if "BYE sip:" in m)
            assert 'Reason: Q.850;cause=41;text="NORMAL_TEMPORARY_FAILURE"' in bye
            assert f"Call-ID: {stored[uuid]['call_id']}" in bye
        # re's sipsess closes a session on a BYE with ECONNRESET
        closed = bare.wait_for("session closed: Connection reset by peer", 5)
        assert closed is not None and closed > killed_at, bare.log()[-2000:]
        # the records and callbacks are those of any call a crash ended: one hangup each
        c2 = sdk_client(server.base_url)
        for uuid in uuids:
            rec = await sdk(c2.calls.get, uuid)
            assert (
                rec.call_status == "completed" and rec.hangup_source == "Error" and rec.answer_time
            )
            hang = await receiver.wait_hangup(uuid, timeout=5)
            assert hang.params["CallStatus"] == "completed"
        assert (await sdk(c2.live_calls.list_ids)).calls == []
        assert server.store.live_dialogs() == []
        assert server.store.clear_dialogs() == 0  # nothing left for the next start
        await asyncio.sleep(0.5)  # a duplicate callback would come now
        assert sorted(h.params["CallUUID"] for h in receiver.of("/hangup")) == sorted(uuids)
        sig_ok(receiver)
    finally:
        await server.stop(drain_timeout_s=0.5)


@needs_sipp
async def test_calls_that_ended_leave_no_dialog_to_bye(
    sipp: Any, tmp_path: Path, sdk_base: Any, receiver: WebhookReceiver
) -> None:
    """A call hung up normally forgets its dialog: the restart after a crash sends nothing
    to its callee (the live one still gets its BYE)."""
    ended_peer, live_peer = sipp("uas_callee_bye.xml"), sipp("uas_answer.xml")
    db = tmp_path / "crash.db"
    proc, base, sip_port = await serve_subprocess(tmp_path, db)
    sdk_base(base)
    try:
        c = sdk_client(base)
        ended = await _answered(c, receiver, ended_peer.uri)
        live = await _answered(c, receiver, live_peer.uri)
        await receiver.wait_hangup(ended, timeout=10)
        reader = CallStore(str(db), checkpoint_interval_s=0)
        try:
            assert [uuid for uuid, _ in reader.live_dialogs()] == [live]
            # Kill only once the outbox has marked that callback delivered: killed between
            # the receiver's 200 and that mark, the next process would send it again (the
            # outbox is at-least-once across a crash).
            await wait_until(lambda: _delivered(reader, ended), 5, what="hangup marked delivered")
        finally:
            reader.close()
    finally:
        await kill9(proc)
    await sipp_done(ended_peer)
    # restarted on the same SIP port, as a production server is: sipp (unlike baresip) answers
    # a request of a call at the address the call's INVITE came from, not at its Via
    server = await start_server(make_config(tmp_path, db_path=str(db), sip_port=sip_port), sdk_base)
    try:
        assert server.recovered_byes == {live: 200}
        await sipp_done(live_peer)
        assert len(receiver.of("/hangup", ended)) == 1
        assert (await receiver.wait_hangup(live, timeout=5)).params["HangupSource"] == "Error"
    finally:
        await server.stop(drain_timeout_s=0.5)
