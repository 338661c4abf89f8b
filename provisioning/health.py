"""A worker's own HTTP endpoint (WORKER_METRICS_PORT): /health/live, /health/ready and /metrics.
It is served from a thread (stdlib wsgiref, the way prometheus-client's own start_http_server does),
not from the event loop, so that a stuck loop is reported instead of leaving probes hanging. The
answers are read from state the loop keeps (`Heartbeat`); nothing here touches the catalog."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from provisioning.metrics import WorkerMetrics

log = logging.getLogger("tenantplane.worker")

STUCK_AFTER = 30.0  # seconds without a loop round beyond the longest pause: the loop is stuck


class Heartbeat:
    """What the loop last did: when its latest round ended and whether it reached the catalog.
    Written by the loop, read by the endpoint's thread (plain attribute stores, atomic in CPython)."""

    def __init__(self, longest_pause: float) -> None:
        self.limit = STUCK_AFTER + longest_pause
        self.ticked_at = time.monotonic()
        self.catalog_ok = False  # not ready until a round has reached the catalog

    def tick(self, catalog_ok: bool) -> None:
        self.ticked_at = time.monotonic()
        self.catalog_ok = catalog_ok

    def state(self) -> tuple[bool, bool, float]:
        """(live, ready, seconds since the last round)."""
        age = time.monotonic() - self.ticked_at
        live = age <= self.limit
        return live, live and self.catalog_ok, age


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never holds the worker's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not logged
        pass


def _app(heartbeat: Heartbeat, metrics: WorkerMetrics) -> Callable:
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return exposition(environ, start_response)
        live, ready, age = heartbeat.state()
        if path == "/health/live":
            ok, body = live, {"status": "ok" if live else "stuck", "last_round_seconds_ago": round(age, 3)}
        elif path == "/health/ready":
            ok = ready
            body = {"status": "ready" if ready else "not_ready", "loop": "ok" if live else "stuck",
                    "catalog": "ok" if heartbeat.catalog_ok else "unreachable", "last_round_seconds_ago": round(age, 3)}
        else:
            start_response("404 Not Found", [("Content-Type", "application/problem+json")])
            return [json.dumps({"type": "about:blank", "title": "Not Found", "status": 404,
                                "code": "not_found"}).encode()]
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


class HealthServer:
    def __init__(self, host: str, port: int, heartbeat: Heartbeat, metrics: WorkerMetrics) -> None:
        self._server = make_server(host, port, _app(heartbeat, metrics), server_class=_ThreadingServer,
                                   handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="worker health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
