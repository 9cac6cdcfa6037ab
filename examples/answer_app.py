"""The smallest call application: answers every fetch (GET or POST, any path) with an XML
document and every callback with 200, printing one line per request. Standard library only.

    python3 examples/answer_app.py --port 9000 &

Paths ending in ``voice.xml``, ``fallback.xml`` or ``other.xml`` get TwiML (``<Pause>``, for
the Twilio-style Calls API); every other path gets Plivo XML (``<Wait>``), which the Plivo and
legacy APIs run. The README's examples point their answer URLs here.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

PLIVO_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Wait length="{seconds}"/></Response>\n'
)
TWIML = '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Pause length="{seconds}"/></Response>\n'
TWIML_PATHS = ("voice.xml", "fallback.xml", "other.xml")


class Handler(BaseHTTPRequestHandler):
    seconds = 3

    def _answer(self, params: dict[str, str]) -> None:
        path = urlsplit(self.path).path
        event = (
            params.get("Event")
            or params.get("CallStatus")
            or params.get("CallStatus".lower())
            or ""
        )
        print(
            f"{self.command} {self.path} {event} {params.get('CallUUID') or params.get('CallSid') or ''}",
            flush=True,
        )
        template = TWIML if path.endswith(TWIML_PATHS) else PLIVO_XML
        body = template.format(seconds=self.seconds).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        self._answer(dict(parse_qsl(urlsplit(self.path).query)))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = self.rfile.read(min(length, 1 << 20)).decode("utf-8", "replace")
        self._answer({**dict(parse_qsl(urlsplit(self.path).query)), **dict(parse_qsl(form))})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - one line per request already
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument(
        "--wait", type=int, default=3, metavar="S", help="seconds each call waits before it ends"
    )
    args = parser.parse_args()
    Handler.seconds = args.wait
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"call application on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
