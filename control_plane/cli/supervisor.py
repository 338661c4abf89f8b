"""The dev stack's child processes: started in sessions of their own (a Ctrl-C in the terminal
reaches `tenantctl dev` only, which stops them in order), told by the kernel to stop should `dev`
die without stopping them (Linux: PR_SET_PDEATHSIG), restarted when one dies unasked (at most
MAX_RESTARTS in RESTART_WINDOW seconds each, then the stack stops), and stopped with SIGTERM, then
SIGKILL after a grace."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from control_plane.embedded import die_with_parent

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0  # seconds
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL


class StopRequested(BaseException):
    """SIGINT, SIGTERM or SIGHUP: stop everything and exit 0 (a BaseException, like KeyboardInterrupt,
    so that nothing on the way catches it as an error)."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise StopRequested(signal.Signals(signum).name)


def on_stop_signals(handler: Callable = _raise_stop) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def ignore_stop_signals() -> None:
    """While stopping: a second Ctrl-C must not cut the cleanup short."""
    on_stop_signals(signal.SIG_IGN)  # type: ignore[arg-type]


class Child:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Callable[[str], None]) -> None:
        self.name, self.argv, self.env, self.log = name, list(argv), env, log
        self.proc: subprocess.Popen | None = None
        self._restarts: list[float] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True, preexec_fn=die_with_parent)

    def check(self) -> bool:
        """Restart the process if it died; False once it died too often."""
        if self.proc is None or self.proc.poll() is None:
            return True
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            self.log(f"{self.name} exited with status {self.proc.returncode} {MAX_RESTARTS + 1} times within "
                     f"{RESTART_WINDOW:g} s; stopping everything")
            return False
        self.log(f"{self.name} exited with status {self.proc.returncode}; starting it again "
                 f"({len(self._restarts)} of {MAX_RESTARTS} within {RESTART_WINDOW:g} s)")
        self.start()
        return True


def stop_all(children: Sequence[Child], grace: float = STOP_GRACE) -> None:
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
