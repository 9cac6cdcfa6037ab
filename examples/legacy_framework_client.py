"""A program written for the legacy Plivo framework's REST API (``/v0.1/``): it uses only
``requests`` and the framework's documented parameters, and runs unchanged against softswitch.

    python examples/legacy_framework_client.py http://127.0.0.1:8088 AUTH_ID AUTH_TOKEN \\
        'sofia/gateway/carrier/' 15557654321 http://127.0.0.1:9000/answer.xml [seconds]

Places one call, prints the response, and after ``seconds`` (if given) hangs the request up.
"""

from __future__ import annotations

import json
import sys
import time

import requests


def main(argv: list[str]) -> int:
    base, auth_id, auth_token, gateways, to, answer_url = argv[:6]
    hold = float(argv[6]) if len(argv) > 6 else None
    auth = (auth_id, auth_token)
    resp = requests.post(f"{base}/v0.1/Call/", auth=auth, timeout=10, data={
        "From": "15551234567",
        "To": to,
        "Gateways": gateways,
        "GatewayTimeouts": "10",
        "GatewayRetries": "1",
        "AnswerUrl": answer_url,
        "CallerName": "Example Client",
        "TimeLimit": "120",
    })
    resp.raise_for_status()
    body = resp.json()
    print(json.dumps(body), flush=True)
    if not body["Success"]:
        return 1
    if hold is not None:
        time.sleep(hold)
        hung = requests.post(f"{base}/v0.1/HangupCall/", auth=auth, timeout=10,
                             data={"RequestUUID": body["RequestUUID"]}).json()
        print(json.dumps(hung), flush=True)
        return 0 if hung["Success"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
