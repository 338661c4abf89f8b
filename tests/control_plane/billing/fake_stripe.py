"""A Stripe API for the tests, on free ports: localstripe (a stateful fake Stripe server from PyPI)
in a subprocess, behind a small front server of ours that adds what localstripe lacks: Checkout
Session and Billing Portal endpoints, and idempotency keys honoured the way Stripe honours them
(the same key and body answer the first answer again; the same key with another body is an
idempotency_error). Everything else is passed to localstripe unchanged.

The front server can also drop the answer of a request after the work is done (`drop_answers`),
which is what a crash between Stripe's answer and our recording of it looks like from our side.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LAUNCHER = Path(__file__).with_name("localstripe_server.py")


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None
    replayed: bool


@dataclass
class FrontState:
    backend_port: int
    answers: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)  # key -> (body digest, status, body)
    seen: list[Seen] = field(default_factory=list)
    drop: dict[str, int] = field(default_factory=dict)  # path -> how many answers to drop
    hold: dict[str, float] = field(default_factory=dict)  # path -> seconds to sit on the next answer
    sessions: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    key_locks: dict[str, threading.Lock] = field(default_factory=dict)


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()}


class _Handler(BaseHTTPRequestHandler):
    server: "_FrontServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._handle(b"")

    def do_DELETE(self) -> None:
        self._handle(self._body())

    def do_POST(self) -> None:
        self._handle(self._body())

    def _handle(self, body: bytes) -> None:
        state = self.server.state
        key = self.headers.get("Idempotency-Key") if self.command == "POST" else None
        path = self.path.split("?")[0]
        if key is None:
            status, answer = self._work(path, body)
            state.seen.append(Seen(self.command, path, None, False))
            return self._send(status, answer, path)
        with state.lock:
            key_lock = state.key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one request per key at a time, as Stripe does
            digest = hashlib.sha256(self.command.encode() + path.encode() + body).hexdigest()
            stored = state.answers.get(key)
            if stored is not None:
                state.seen.append(Seen(self.command, path, key, True))
                if stored[0] != digest:
                    error = {"error": {"type": "idempotency_error", "message": "Keys for idempotent requests "
                                       "can only be used with the same parameters they were first used with."}}
                    return self._send(400, json.dumps(error).encode(), path)
                return self._send(stored[1], stored[2], path, replayed=True)
            status, answer = self._work(path, body)
            state.seen.append(Seen(self.command, path, key, False))
            if status < 500:
                state.answers[key] = (digest, status, answer)
            return self._send(status, answer, path)

    def _work(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.command == "POST" and path == "/v1/checkout/sessions":
            return self._checkout_session(_form(body))
        if self.command == "POST" and path == "/v1/billing_portal/sessions":
            return self._portal_session(_form(body))
        return self._forward(body)

    def _checkout_session(self, form: dict[str, str]) -> tuple[int, bytes]:
        if not form.get("customer") or not form.get("line_items[0][price]"):
            return 400, json.dumps({"error": {"type": "invalid_request_error", "message": "Missing customer or price"}}).encode()
        session_id = "cs_test_" + secrets.token_hex(12)
        session = {"id": session_id, "object": "checkout.session", "mode": form.get("mode"),
                   "customer": form["customer"], "client_reference_id": form.get("client_reference_id"),
                   "metadata": {"tenant_id": form.get("metadata[tenant_id]")},
                   "price": form["line_items[0][price]"], "status": "open",
                   "success_url": form.get("success_url"), "cancel_url": form.get("cancel_url"),
                   "url": f"https://checkout.stripe.test/c/pay/{session_id}"}
        self.server.state.sessions[session_id] = session
        return 200, json.dumps(session).encode()

    def _portal_session(self, form: dict[str, str]) -> tuple[int, bytes]:
        if not form.get("customer"):
            return 400, json.dumps({"error": {"type": "invalid_request_error", "message": "Missing customer"}}).encode()
        session_id = "bps_" + secrets.token_hex(12)
        return 200, json.dumps({"id": session_id, "object": "billing_portal.session", "customer": form["customer"],
                                "return_url": form.get("return_url"),
                                "url": f"https://billing.stripe.test/p/session/{session_id}"}).encode()

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.state.backend_port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _send(self, status: int, body: bytes, path: str, replayed: bool = False) -> None:
        state = self.server.state
        with state.lock:
            drop = state.drop.get(path, 0)
            if drop:
                state.drop[path] = drop - 1
            hold = state.hold.pop(path, 0.0)
        if hold:
            time.sleep(hold)  # the work is done; the caller may be killed while it waits
        if drop:
            # the work is done (and its answer kept for the key); the caller never hears of it
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", "req_" + secrets.token_hex(8))
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(body)


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FrontState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FakeStripe:
    """localstripe plus the front server; `url` is what STRIPE_API_BASE points at."""

    def __init__(self) -> None:
        self._backend = subprocess.Popen([sys.executable, str(LAUNCHER)], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        line = self._backend.stdout.readline()  # the launcher prints its port once it listens
        if not line.strip().isdigit():
            self._backend.kill()
            raise RuntimeError("localstripe did not start")
        self.backend_url = f"http://127.0.0.1:{int(line)}"
        self.state = FrontState(backend_port=int(line))
        self._front = _FrontServer(self.state)
        self._thread = threading.Thread(target=self._front.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._front.server_address[1]}"

    def stop(self) -> None:
        self._front.shutdown()
        self._front.server_close()
        self._backend.terminate()
        try:
            self._backend.wait(10)
        except subprocess.TimeoutExpired:
            self._backend.kill()

    def drop_answers(self, path: str, count: int) -> None:
        with self.state.lock:
            self.state.drop[path] = count

    def hold_answer(self, path: str, seconds: float) -> None:
        with self.state.lock:
            self.state.hold[path] = seconds

    def seen(self, path: str) -> list[Seen]:
        return [s for s in self.state.seen if s.path == path]

    def backend(self, method: str, path: str, api_key: str, form: dict[str, str] | None = None) -> dict:
        """A request straight to localstripe (what Stripe holds, without our front server)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.state.backend_port, timeout=30)
        try:
            body = urllib.parse.urlencode(form) if form else None
            conn.request(method, path, body=body, headers={
                "Authorization": f"Bearer {api_key}", "Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            raw = response.read()
            if response.status >= 300:
                raise AssertionError(f"localstripe answered {response.status}: {raw[:300]!r}")
            return json.loads(raw) if raw else {}
        finally:
            conn.close()

    def customers_of(self, tenant_id: str, api_key: str) -> list[dict]:
        listed = self.backend("GET", "/v1/customers?limit=100", api_key)["data"]
        return [c for c in listed if (c.get("metadata") or {}).get("tenant_id") == tenant_id]

    def wait_until(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("the fake Stripe server did not get there in time")
            time.sleep(0.05)
