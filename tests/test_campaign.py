"""`softswitch campaign` as an operator runs it: a CSV list dialled to sipp callees (answer,
busy, no answer), the answer URL served by a real HTTP server, the results CSV, and resuming
after Ctrl-C or a crash with every row called once."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import signal
import sys
from pathlib import Path

import pytest

from softswitch.campaign import Row, classify, read_rows, with_variables
from tests.conftest import media_ports, needs_sipp
from tests.peers import amd_clips
from tests.peers.baresip import needs_baresip

HOLD = '<Response><Wait length="30"/></Response>'
SHORT = '<Response><Wait length="1"/></Response>'


def write_list(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def results_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


async def start_campaign(
    csv_path: Path, answer_url: str, *extra: str
) -> asyncio.subprocess.Process:
    ports = media_ports()
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "softswitch.cli",
        "campaign",
        str(csv_path),
        "--answer-url",
        answer_url,
        "--rtp-ports",
        f"{ports['port_min']}-{ports['port_max']}",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, dict, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()
    return proc.returncode or 0, json.loads(lines[-1]), err.decode()


# ------------------------------------------------------------------------------ unit


def test_list_rows_and_variables(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("to,from,name,order\nsip:a@127.0.0.1,1000,Ann,42\n\n 14155550100 ,1001,,7\n")
    rows = read_rows(path)
    assert rows == [
        Row(1, "sip:a@127.0.0.1", "1000", {"name": "Ann", "order": "42"}),
        Row(2, "14155550100", "1001", {"name": "", "order": "7"}),
    ]
    assert (
        with_variables("http://h/a?x=1&name=z", {"name": "Ann B", "order": "42"})
        == "http://h/a?x=1&name=Ann+B&order=42"
    )
    (tmp_path / "bad.csv").write_text("number,from\n1,2\n")
    from softswitch.campaign import CampaignError

    with pytest.raises(CampaignError, match="missing column"):
        read_rows(tmp_path / "bad.csv")


def test_outcomes():
    from types import SimpleNamespace

    from softswitch.model import CallEnd, EndReason, HangupSource

    def call(cause, answered=False, reason=None, machine=None):
        return SimpleNamespace(
            end=CallEnd(cause, HangupSource.CALLEE, reason),
            answered_at=1.0 if answered else None,
            machine=None if machine is None else SimpleNamespace(machine=machine),
        )

    assert classify(call("NORMAL_CLEARING", answered=True)) == "answered"
    assert classify(call("NORMAL_CLEARING", answered=True, machine=True)) == "machine"
    assert classify(call("MACHINE_DETECTED", answered=True, machine=True)) == "machine"
    assert classify(call("USER_BUSY")) == "busy"
    assert classify(call("NO_ANSWER", reason=EndReason.RING_TIMEOUT)) == "no-answer"
    assert classify(call("ORIGINATOR_CANCEL", reason=EndReason.API)) == "cancelled"
    assert classify(call("DESTINATION_OUT_OF_ORDER")) == "failed"


def test_usage_errors(tmp_path):
    import subprocess

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "softswitch.cli", "campaign", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    out = run(str(tmp_path / "missing.csv"), "--answer-url", "http://127.0.0.1:9/a")
    assert (
        out.returncode == 2
        and out.stderr.startswith("usage: softswitch campaign")
        and "missing.csv" in out.stderr
    )
    listed = write_list(tmp_path / "l.csv", [{"to": "sip:a@127.0.0.1:9", "from": "1000"}])
    out = run(str(listed), "--answer-url", "http://127.0.0.1:9/a", "--cps", "0")
    assert out.returncode == 2 and "--cps" in out.stderr
    out = run(str(listed), "--answer-url", "ftp://x/a")
    assert out.returncode == 2 and "--answer-url" in out.stderr


# ------------------------------------------------------------------------------ real calls


@needs_sipp
async def test_campaign_mixes_answer_busy_and_no_answer(tmp_path, sipp, webhook_receiver):
    """Three rows to three sipp callees: answered (the answer URL's XML ends the call), 486
    busy, ringing until the ring timeout; a fourth row the API refuses is recorded, not
    dialled. The answer URL gets the row's variables; the results CSV has one line per row;
    the JSON summary counts them."""
    web = await webhook_receiver(routes={"/answer": SHORT})
    answer, busy, ring = sipp("uas_answer.xml"), sipp("uas_busy.xml"), sipp("uas_ring_cancel.xml")
    listed = write_list(
        tmp_path / "list.csv",
        [
            {"to": answer.uri, "from": "1000", "name": "Ann"},
            {"to": busy.uri, "from": "1001", "name": "Bob"},
            {"to": ring.uri, "from": "1002", "name": "Cy"},
            {"to": "not a destination", "from": "1003", "name": "Di"},  # refused before dialling
        ],
    )
    proc = await start_campaign(
        listed,
        web.url("/answer"),
        "--ring-timeout",
        "2",
        "--concurrency",
        "3",
        "--cps",
        "20",
        "--log-format",
        "json",
        "-v",
    )
    code, summary, err = await finish(proc)
    assert code == 0, err
    assert summary["rows"] == 4 and summary["called"] == 3 and summary["complete"] is True
    assert summary["invalid"] == 1
    assert (summary["answered"], summary["busy"], summary["no_answer"], summary["failed"]) == (
        1,
        1,
        1,
        0,
    )
    rows = {r["row"]: r for r in results_of(tmp_path / "list.results.csv")}
    assert [rows[n]["outcome"] for n in ("1", "2", "3", "4")] == [
        "answered",
        "busy",
        "no-answer",
        "invalid",
    ]
    assert "to" in rows["4"]["error"] and not rows["4"]["call_uuid"]
    assert rows["1"]["hangup_cause"] == "NORMAL_CLEARING" and rows["1"]["answer_time"]
    assert rows["2"]["sip_status"] == "486" and rows["2"]["hangup_cause"] == "USER_BUSY"
    assert rows["3"]["hangup_cause"] == "NO_ANSWER"
    fetched = web.of("/answer")
    assert (
        len(fetched) == 1
        and fetched[0].query["name"] == "Ann"
        and fetched[0].form["To"] == answer.uri
    )
    for peer in (answer, busy, ring):
        peer.assert_ok()
    # -v logs INFO; --log-format json: one object per line (stderr).
    assert any(
        json.loads(line).get("logger") == "softswitch.campaign"
        for line in err.splitlines()
        if line.startswith("{")
    )


@needs_sipp
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
async def test_campaign_resumes_and_calls_each_row_once(tmp_path, sipp, webhook_receiver, how):
    """Four rows, two at a time, the calls held by the answer XML. Stopped once two calls are
    up (Ctrl-C: they are hung up and recorded, exit 130; SIGKILL: a crash, their rows are
    recorded as interrupted by the next run), then run again: the other two rows are called,
    and no row is called twice (each row's answer URL is fetched at most once)."""
    web = await webhook_receiver(routes={"/answer": HOLD})
    callee = sipp("uas_answer.xml", calls=4, timeout=60)
    listed = write_list(
        tmp_path / "list.csv",
        [{"to": callee.uri, "from": f"100{i}", "n": str(i)} for i in range(1, 5)],
    )
    proc = await start_campaign(
        listed, web.url("/answer"), "--concurrency", "2", "--cps", "50", "--no-progress"
    )
    try:
        await web.wait_for(path="/answer", count=2, timeout=20)
        await asyncio.sleep(0)  # nothing to wait on: the point is that calls are up now
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
        else:
            proc.kill()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    first = results_of(tmp_path / "list.results.csv")
    if how == "sigint":
        assert proc.returncode == 130, err.decode()
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["complete"] is False and summary["done"] == 2
        assert sorted(r["outcome"] for r in first) == ["answered", "answered"]
    else:
        assert proc.returncode == -signal.SIGKILL
        assert first == []  # nothing finished before the kill
    # Resume: HOLD gives way to a short call so the second run ends by itself.
    web.routes["/answer"] = SHORT
    code, summary, err2 = await finish(
        await start_campaign(
            listed, web.url("/answer"), "--concurrency", "2", "--cps", "50", "--no-progress"
        )
    )
    assert code == 0, err2
    assert summary["complete"] is True and summary["called"] == 2
    results = results_of(tmp_path / "list.results.csv")
    assert sorted(int(r["row"]) for r in results) == [1, 2, 3, 4]  # each row exactly once
    fetched = [r.query["n"] for r in web.of("/answer")]
    assert len(fetched) == 4 and sorted(fetched) == ["1", "2", "3", "4"]  # each row dialled once
    outcomes = sorted(r["outcome"] for r in results)
    if how == "sigint":
        assert outcomes == ["answered"] * 4
        callee.assert_ok(timeout=30)
    else:
        assert outcomes == ["answered", "answered", "interrupted", "interrupted"]
        callee.stop()  # the two calls the kill left up never get a BYE: sipp times them out


# ------------------------------------------------------------------------------ machine detection

machine_clip = amd_clips.machine_clip  # the callee's voicemail greeting (espeak-ng and sox)


@needs_baresip
@pytest.mark.peer
@pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox make the clips",
)
async def test_campaign_machine_detection_hangup(tmp_path, baresip, machine_clip, webhook_receiver):
    """``--machine-detection hangup``: baresip answers with a voicemail greeting; the row's
    outcome is ``machine`` and the call ends MACHINE_DETECTED before any document runs."""
    web = await webhook_receiver(routes={"/answer": HOLD})
    peer = baresip(play_wav=machine_clip)
    listed = write_list(tmp_path / "list.csv", [{"to": peer.uri, "from": "1000"}])
    code, summary, err = await finish(
        await start_campaign(
            listed,
            web.url("/answer"),
            "--machine-detection",
            "hangup",
            "--machine-detection-time",
            "5000",
            "--no-progress",
        )
    )
    assert code == 0, err
    assert summary["machine"] == 1 and summary["answered"] == 0, summary
    (row,) = results_of(tmp_path / "list.results.csv")
    assert row["outcome"] == "machine" and row["machine"] == "true"
    assert row["hangup_cause"] == "MACHINE_DETECTED", row
