"""The operators' page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
driven by Selenium) while a real call to a sipp callee runs: the live table shows the call
and its duration moves (server-sent events), screenshots are taken and checked, the call's
view draws the SIP ladder (INVITE/100/180/200/ACK, then BYE/200) and shows a message whole,
the hangup button ends the call, and the recent calls list finds it."""

from __future__ import annotations

import asyncio
import base64
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import free_port, needs_sipp
from tests.peers import plivo_api as api
from tests.peers.plivo_api import AUTH_ID, AUTH_TOKEN, Env, sipp_done, wait_record
from tests.peers.webhooks import WebhookReceiver

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.peer,
    needs_sipp,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None, reason="chromium / chromium-driver not installed"
    ),
    # One browser at a time, apart from the other process-heavy tests.
    pytest.mark.xdist_group("timing"),
]

env = api.env
receiver = api.receiver
sdk_base = api.sdk_base


@pytest.fixture
def browser(tmp_path: Any) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    service = Service(
        executable_path=CHROMEDRIVER, port=free_port(__import__("socket").SOCK_STREAM)
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(10)
    try:
        # The API's Basic credentials on every request of the page (fetch and EventSource too).
        token = base64.b64encode(f"{AUTH_ID}:{AUTH_TOKEN}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        yield driver
    finally:
        driver.quit()


async def _until(
    driver: Any, check: Callable[[Any], Any], timeout: float = 8.0, what: str = ""
) -> Any:
    """Poll the page (off the event loop the server runs on) until ``check`` returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await asyncio.to_thread(check, driver)
        except Exception:  # a node replaced between find and read
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.1)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", png[16:24])


def _live_row(uid: str) -> Callable[[Any], Any]:
    def check(d: Any) -> Any:
        rows = d.find_elements(By.CSS_SELECTOR, f'#live-table tr[data-uuid="{uid}"]')
        if not rows:
            return None
        cells = rows[0].find_elements(By.TAG_NAME, "td")
        return {
            "state": cells[0].text,
            "duration": cells[4].text,
            "codec": cells[5].text,
            "row": rows[0],
        }

    return check


def _ladder(d: Any) -> list[str]:
    return [t.text for t in d.find_elements(By.CSS_SELECTOR, "#ladder .msg text.msg-label")]


async def test_live_table_ladder_and_hangup_in_chromium(
    sipp: Any, env: Env, receiver: WebhookReceiver, browser: Any, tmp_path: Any
) -> None:
    callee = sipp("uas_answer.xml")
    await asyncio.to_thread(browser.get, f"{env.base}/ui/")
    await _until(
        browser,
        lambda d: d.find_element(By.ID, "stream-state").text.startswith("live"),
        what="the event stream connected",
    )
    assert browser.find_element(By.ID, "live-empty").is_displayed()

    resp = await env.sdk(
        env.client.calls.create,
        from_="1000",
        to_=callee.uri,
        answer_url=receiver.url("/answer"),
        hangup_url=receiver.url("/hangup"),
    )
    uid = (await receiver.wait_for(lambda h: h.path == "/answer", timeout=10))[0].params["CallUUID"]

    # The live table shows the call answered, with its codec, and its duration moves.
    first = await _until(
        browser,
        lambda d: (r := _live_row(uid)(d)) and r["state"] == "answered" and r,
        what="the answered call in the live table",
    )
    assert first["codec"] == "PCMU"
    shot1 = await asyncio.to_thread(browser.get_screenshot_as_png)
    later = await _until(
        browser,
        lambda d: (r := _live_row(uid)(d)) and r["duration"] != first["duration"] and r,
        timeout=5,
        what="the duration updated live",
    )
    assert later["duration"] > first["duration"]
    shot2 = await asyncio.to_thread(browser.get_screenshot_as_png)
    for shot in (shot1, shot2):
        width, height = _png_size(shot)
        assert width >= 800 and height >= 500
        assert len(shot) > 5000  # a page, not a blank image
    assert shot1 != shot2  # the table changed between them
    (tmp_path / "live.png").write_bytes(shot2)
    assert browser.find_element(By.ID, "live-count").text == "1"

    # The call's view: the ladder so far; a click shows the message whole.
    await _until(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f'#live-table tr[data-uuid="{uid}"] td').click() or True
        ),
        what="a click on the call's row",
    )  # the row is redrawn at each event: find and click at once
    labels = await _until(
        browser, lambda d: (ls := _ladder(d)) and "ACK" in ls and ls, what="the ladder"
    )
    assert labels[:5] == ["INVITE", "100 Trying", "180 Ringing", "200 OK", "ACK"]
    invite = browser.find_element(By.CSS_SELECTOR, '#ladder .msg[data-index="0"]')
    await asyncio.to_thread(invite.click)
    text = browser.find_element(By.ID, "message-text").text
    assert "INVITE sip:service@127.0.0.1" in text and "Call-ID:" in text and "m=audio" in text
    assert browser.find_element(By.ID, "call-hangup").is_displayed()

    # Back to the table: its hangup button ends the call; the callee gets the BYE.
    await asyncio.to_thread(browser.get, f"{env.base}/ui/#live")
    await _until(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, f'button.hangup[data-uuid="{uid}"]').click() or True
        ),
        what="a click on the hangup button",
    )
    hangup = await receiver.wait_hangup(request_uuid=resp.request_uuid, timeout=10)
    assert (
        hangup.params["CallStatus"] == "completed"
        and hangup.params["HangupSource"] == "API Request"
    )
    await sipp_done(callee)
    await _until(
        browser,
        lambda d: not _live_row(uid)(d) and d.find_element(By.ID, "live-empty").is_displayed(),
        what="the call gone from the live table",
    )
    await wait_record(env.server, resp.request_uuid)

    # The ended call's view: the stored ladder with the BYE, the answer document, the callbacks.
    await asyncio.to_thread(browser.get, f"{env.base}/ui/#call/{uid}")
    labels = await _until(
        browser, lambda d: (ls := _ladder(d)) and "BYE" in ls and ls, what="the stored ladder"
    )
    assert labels == ["INVITE", "100 Trying", "180 Ringing", "200 OK", "ACK", "BYE", "200 OK"]
    assert "NORMAL_CLEARING" in browser.find_element(By.ID, "call-record").text
    docs = browser.find_element(By.ID, "call-documents").text
    assert "answer:" in docs and "<Wait" in docs
    deliveries = await _until(
        browser,
        lambda d: (t := d.find_element(By.ID, "call-deliveries").text) and "hangup" in t and t,
        what="the hangup callback listed",
    )
    assert "fetch" in deliveries and "#1: 200" in deliveries
    (tmp_path / "call.png").write_bytes(await asyncio.to_thread(browser.get_screenshot_as_png))

    # Recent calls: a search by the callee's port finds it, completed.
    await asyncio.to_thread(browser.get, f"{env.base}/ui/#recent")
    search = await _until(browser, lambda d: d.find_element(By.NAME, "q"))
    await asyncio.to_thread(search.send_keys, str(callee.port) + "\n")
    row = await _until(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, f'#recent-table tr[data-uuid="{uid}"]').text,
        what="the call in the recent list",
    )
    assert "completed" in row and "NORMAL_CLEARING" in row
    (tmp_path / "recent.png").write_bytes(await asyncio.to_thread(browser.get_screenshot_as_png))
