"""Runs localstripe's own aiohttp app on 127.0.0.1 and a port the kernel picks, and prints that
port once it listens (localstripe's command line wants a port chosen beforehand and binds every
address). Started by fake_stripe.FakeStripe as a subprocess."""

import socket
import sys

from aiohttp import web
from localstripe.server import app

sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind(("127.0.0.1", 0))
sock.listen(128)


async def announce(_: web.Application) -> None:
    print(sock.getsockname()[1], flush=True)


app.on_startup.append(announce)
web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)
sys.exit(0)
