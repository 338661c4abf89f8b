"""A receiver of tenantplane's lifecycle events (EVENTS_WEBHOOK_URL): checks the signature, drops
what it has seen already (delivery is at least once), and reacts, here by printing; an application
would seed a new tenant's data or warm its caches.

    EVENTS_WEBHOOK_SECRET=... python -m examples.events_receiver 9000
    # and the workers with EVENTS_WEBHOOK_URL=http://127.0.0.1:9000/ and the same secret

The header is Stripe's scheme with our name: `Tenantplane-Signature: t=<unix time>,v1=<hex>`, where
<hex> is HMAC-SHA256 of "<t>.<raw body>" keyed with the secret. Compare in constant time and refuse
an old `t` (a replay). Any 2xx answer means delivered; anything else is retried with backoff.
Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import sys
import time

TOLERANCE_SECONDS = 300  # a signature older than this is refused (a replayed request)


def verify_signature(header: str | None, body: bytes, secret: str, *, now: float | None = None,
                     tolerance: float = TOLERANCE_SECONDS) -> bool:
    """Whether `header` (Tenantplane-Signature) signs `body` with `secret`, recently."""
    try:
        parts = dict(item.split("=", 1) for item in (header or "").split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts.get("v1", ""), expected)


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self, port: int, secret: str) -> None:
        self.secret = secret
        self.seen: set[int] = set()  # an application keeps this in its database (a unique key)
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_event(self, event: dict) -> None:
        print(event["type"], event["data"].get("slug"), event["data"].get("tier"), flush=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify_signature(self.headers.get("Tenantplane-Signature"), body, self.server.secret):
            self._answer(400)
            return
        event = json.loads(body)
        if event["id"] not in self.server.seen:  # the same id again: handled already
            self.server.handle_event(event)
            self.server.seen.add(event["id"])
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    server = Receiver(int(argv[0]) if argv else 9000, os.environ["EVENTS_WEBHOOK_SECRET"])
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
