"""A throwaway PostgreSQL server on loopback for tests, from Debian's ``postgresql`` package.

``start_postgres()`` is a context manager that yields a SQLAlchemy URL
(``postgresql+psycopg2://USER@127.0.0.1:PORT/DBNAME``) and stops the server and deletes its
files on exit. It raises ``PostgresUnavailable(reason)`` with a one-line reason when the
server binaries or the ``psycopg2`` driver are missing, or when the server fails to start
(the reason then ends with the tail of the server log).

Environment:

- ``TQL_TEST_POSTGRES_URL``: use this URL instead of starting a server.
- ``TQL_PG_BIN``: the directory holding ``initdb``/``pg_ctl``/``postgres``; by default the
  directory of ``initdb`` on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` system
user (else ``nobody``) via ``runuser``, in a temporary directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

URL_ENV = "TQL_TEST_POSTGRES_URL"
BIN_ENV = "TQL_PG_BIN"
DB_NAME = "tql_test"
DB_USER = "postgres"  # the superuser name initdb creates (independent of the OS user)
_BINARIES = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(RuntimeError):
    """No throwaway PostgreSQL server could be had; ``reason`` says why, on one line."""

    def __init__(self, reason: str):
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)


def find_bin_dir() -> Path:
    """The directory with initdb, pg_ctl and postgres, or raise ``PostgresUnavailable``."""
    override = os.environ.get(BIN_ENV)
    if override:
        candidates = [Path(override)]
    else:
        candidates = []
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
        versioned = glob.glob("/usr/lib/postgresql/*/bin")
        versioned.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else -1, reverse=True)
        candidates += [Path(p) for p in versioned]
    for cand in candidates:
        if all(os.access(cand / name, os.X_OK) for name in _BINARIES):
            return cand
    where = f"{BIN_ENV}={override}" if override else "PATH or /usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"PostgreSQL server binaries ({', '.join(_BINARIES)}) not found in {where}; "
        "install Debian's postgresql package (apt-get install -y postgresql)"
    )


def _server_user() -> str | None:
    """The unprivileged OS user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists to run initdb")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no server log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty server log)"


class _Server:
    def __init__(self, bin_dir: Path, user: str | None, root: Path):
        self.bin_dir, self.user, self.root = bin_dir, user, root
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "server.log"
        self.started = False

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # Output goes to a file, not a pipe: pg_ctl forks the server, which must not hold our pipe.
        out_path = self.root / "cmd.out"
        with open(out_path, "w") as out:
            if self.user is not None:
                shutil.chown(out_path, user=self.user)
            try:
                proc = subprocess.run(
                    cmd, cwd=self.root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    timeout=timeout, env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                )
            except subprocess.TimeoutExpired:
                raise PostgresUnavailable(f"{args[0]} timed out after {timeout:.0f}s; server log: {_log_tail(self.log)}")
            except OSError as exc:
                raise PostgresUnavailable(f"cannot run {cmd[0]}: {exc}")
        proc.stdout = out_path.read_text(errors="replace")
        return proc

    def check(self, *args: str, timeout: float) -> None:
        proc = self.run(*args, timeout=timeout)
        if proc.returncode != 0:
            tail = " | ".join(proc.stdout.strip().splitlines()[-6:])
            raise PostgresUnavailable(
                f"{args[0]} failed (exit {proc.returncode}): {tail}; server log: {_log_tail(self.log)}"
            )

    def init(self) -> None:
        self.sock.mkdir()
        if self.user is not None:
            shutil.chown(self.sock, user=self.user)
        self.check(
            "initdb", "-D", str(self.data), "-U", DB_USER, "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync", timeout=120,
        )
        # Trust, but only over the private socket directory and 127.0.0.1.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )

    def start(self, port: int, timeout: float) -> None:
        conf = (
            f"\n# tests/pg_server.py\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{self.sock}'\nfsync = off\nsynchronous_commit = off\n"
            "full_page_writes = off\nmax_connections = 100\nshared_buffers = 32MB\n"
        )
        with open(self.data / "postgresql.auto.conf", "a") as f:
            f.write(conf)
        self.started = True  # from here on, teardown tries to stop it
        self.check("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(timeout)), "start",
                   timeout=timeout + 15)

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(PostgresUnavailable):
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
            self.started = False


def _wait_and_create_db(port: int, timeout: float, log: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, dbname="postgres", connect_timeout=3)
            break
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(
                    f"server on 127.0.0.1:{port} did not accept connections within {timeout:.0f}s "
                    f"({str(exc).strip()}); server log: {_log_tail(log)}"
                )
            time.sleep(0.1)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        conn.close()


@contextlib.contextmanager
def start_postgres(timeout: float = 60.0) -> Iterator[str]:
    """Yield the URL of a fresh PostgreSQL database on loopback; stop and delete it afterwards."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return

    try:
        import psycopg2  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable(f"the psycopg2 driver is not installed ({exc}); pip install psycopg2-binary")
    bin_dir = find_bin_dir()
    user = _server_user()

    # As root, TMPDIR may be a directory the server user cannot reach; /tmp always is.
    base = "/tmp" if user is not None and os.path.isdir("/tmp") else None
    root = Path(tempfile.mkdtemp(prefix="tql-pg-", dir=base))
    server = _Server(bin_dir, user, root)
    try:
        if user is not None:
            shutil.chown(root, user=user)
        os.chmod(root, 0o700)
        server.init()
        for attempt in range(3):  # the free port may be taken between picking and binding it
            port = _free_port()
            try:
                server.start(port, timeout)
                break
            except PostgresUnavailable:
                server.stop()
                if attempt == 2 or "Address already in use" not in _log_tail(server.log, 40):
                    raise
        _wait_and_create_db(port, timeout, server.log)
        yield f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
