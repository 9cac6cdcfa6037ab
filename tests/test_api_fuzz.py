"""A bounded schemathesis run against the running server's ``/openapi.json``: every operation
of every dialect, with generated (valid and invalid) parameters and bodies, must never be
answered 5xx.

The server is ``softswitch serve`` as its own process. Nothing leaves loopback: every
generated destination is rewritten to a closed loopback SIP port (through a configured
gateway for numbers), every generated URL to a closed loopback HTTP port, and the fetch
policy allows loopback only, so a URL that slipped through is refused before a connect.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import free_port
from tests.peers.plivo_api import AUTH_ID, AUTH_TOKEN

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

pytestmark = pytest.mark.xdist_group("fuzz")

#: Examples per operation: ~60 operations x this stays well under 40 s on one core.
EXAMPLES = int(os.environ.get("SOFTSWITCH_FUZZ_EXAMPLES", "25"))
_URL_RE = re.compile(r"^(https?|ftp|file)://", re.IGNORECASE)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    http_port, sip_port, dead_sip, dead_http = free_port(), free_port(), free_port(), free_port()
    (tmp / "fuzz.toml").write_text(f"""
http_host = "127.0.0.1"
http_port = {http_port}
sip_host = "127.0.0.1"
sip_port = {sip_port}
sip_transports = ["udp"]
db_path = "{tmp / "calls.db"}"
data_dir = "{tmp / "data"}"
webhook_retries = 0
answer_url_attempts = 1
answer_url_deadline_s = 2.0
drain_timeout_s = 1.0
shutdown_mode = "hangup"

[http]
fetch_deny = ["0.0.0.0/0", "::/0"]
fetch_allow = ["127.0.0.0/8"]
auth_fail_limit = 0

[limits]
cps = 0
max_concurrent = 50
max_queue = 50

[[accounts]]
auth_id = "{AUTH_ID}"
auth_token = "{AUTH_TOKEN}"

[[gateways]]
name = "fuzz"
host = "127.0.0.1"
port = {dead_sip}
timeout_s = 2
""")
    proc = subprocess.Popen(
        # -q: no call-event lines (stderr is not read after start-up: a full pipe would block)
        [sys.executable, "-m", "softswitch.cli", "serve", "-q", "--config", str(tmp / "fuzz.toml")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    lines: list[bytes] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if b"HTTP API on" in line:
            break
    if not lines or b"HTTP API on" not in lines[-1]:
        proc.kill()
        pytest.fail(f"softswitch serve did not start: {b''.join(lines).decode(errors='replace')}")
    try:
        yield {
            "base": f"http://127.0.0.1:{http_port}",
            "dead_sip": dead_sip,
            "dead_http": dead_http,
            "proc": proc,
            "tmp": tmp,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _loopback_only(value: Any, served: dict[str, Any], key: str = "") -> Any:
    """Rewrite generated destinations and URLs so that nothing can leave loopback."""
    if isinstance(value, dict):
        return {k: _loopback_only(v, served, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_loopback_only(v, served, key) for v in value]
    if not isinstance(value, str):
        return value
    if key.lower() == "to":
        return f"sip:fuzz@127.0.0.1:{served['dead_sip']}"
    if key.lower() == "gateways":
        return "sofia/gateway/fuzz/"
    if _URL_RE.match(value) or "://" in value:
        return f"http://127.0.0.1:{served['dead_http']}/fuzz"
    return value


def test_openapi_operations_never_answer_5xx(served: dict[str, Any]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    schema = schemathesis.openapi.from_url(f"{served['base']}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    auth = (AUTH_ID, AUTH_TOKEN)
    errors: list[str] = []
    tried = 0
    started = time.monotonic()

    def fuzz(op: Any) -> Any:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            nonlocal tried
            # the account in the path is ours (other accounts are 401/404, tested elsewhere)
            if case.path_parameters and "auth_id" in case.path_parameters:
                case.path_parameters["auth_id"] = AUTH_ID
            if isinstance(case.body, dict | list):
                case.body = _loopback_only(case.body, served)
            if case.query:
                case.query = _loopback_only(case.query, served)
            response = case.call(base_url=served["base"], auth=auth, timeout=10)
            tried += 1
            if response.status_code >= 500:
                errors.append(
                    f"{op.method.upper()} {op.path} -> {response.status_code}: "
                    f"{response.text[:200]} (body {str(case.body)[:200]})"
                )

        return run

    for op in operations:
        fuzz(op)()
    elapsed = time.monotonic() - started
    assert served["proc"].poll() is None, "the server died"
    assert not errors, "\n".join(errors[:20])
    print(
        f"schemathesis: {tried} requests over {len(operations)} operations in {elapsed:.1f} s, 0 server errors"
    )
    assert tried >= len(operations)


def test_fuzz_server_log_has_no_tracebacks(served: dict[str, Any]) -> None:
    # After the run (module order): stop the server and read what it said.
    proc = served["proc"]
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    text = err.decode(errors="replace")
    assert "Traceback" not in text, text[-4000:]
