"""Hostile uploads against the real server: what each costs the server in memory.

Starts the app under gunicorn (``--preload``, ``--workers`` sync workers) on a throwaway SQLite
database and data folder (migrated; one project with a lead, an annotator and one small scan),
measures the idle memory of the gunicorn master and workers (their anonymous proportional
set sizes summed from /proc: heap and arrays, pages the workers share counted once), then sends ``--concurrency``
copies at once of each hostile upload below and reports, per kind, the peak of that sum above
idle (sampled every 20 ms), the answers and the wall time:

``bomb, declares 2 GiB``
    2.1 MB of gzip: a NIfTI header that declares 1024^3 int16 voxels, then 2 GiB of zeros.
``bomb, declares 8 MiB``
    2.1 MB of gzip: a NIfTI header that declares 256 x 256 x 64 int16 voxels (under the
    limit), then 2 GiB of zeros.
``scan + 1 GiB zeros``
    a valid 96^3 int16 scan, then 1 GiB of zeros, in one gzip member (1.1 MB).
``600 MiB multipart``
    a scan upload whose multipart body (Content-Length) is 600 MiB, over the 512 MiB limit.
``600 MiB raw body``
    a label save whose raw body is 600 MiB.
``second gzip member``
    a valid label map, then a second gzip member that inflates to 256 MiB of zeros.

Usage::

    .venv/bin/python bench/bench_hostile_uploads.py              # 1 to 3 minutes, mostly start-up
    .venv/bin/python bench/bench_hostile_uploads.py --app-dir /tmp/other-checkout

``--app-dir`` serves another checkout (with this venv), to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_probe import PeakSampler, children, free_port, server_memory, wait_for_port
from labeling import volumes  # pure: numpy and nibabel only

MiB = 1 << 20
SCAN_SHAPE = (96, 96, 96)
BOUNDARY = "benchboundary"

SETUP = """
import json
import numpy as np
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from labeling import services, volumes
from labeling.models import Assignment, Role

User = get_user_model()
lead = User.objects.create_user("lead", password="bench-password")
rater = User.objects.create_user("rater", password="bench-password")
project = services.project_create(actor=lead, name="bench", raters_per_scan=1,
                                  labels=[{"value": 1, "name": "lesion", "color": "#ff0000"}])
services.membership_set(project=project, actor=lead, user=rater, role=Role.ANNOTATOR)
shape = %(shape)r
image = (np.indices(shape).sum(0) %% 251).astype(np.int16)
scan = services.scan_create(project=project, actor=lead, raw=volumes.image_to_bytes(image, np.eye(4)))
assignment = Assignment.objects.get(scan=scan)
try:
    from labeling.auth_services import api_token_create
    def token(user):
        return api_token_create(user=user, name="bench")[1]
except ImportError:
    from rest_framework.authtoken.models import Token
    def token(user):
        return Token.objects.create(user=user).key
print("SETUP " + json.dumps({"project": project.pk, "assignment": assignment.pk, "affine": scan.affine,
                             "lead": token(lead), "rater": token(rater)}))
"""


# --- payloads ---------------------------------------------------------------------------------------


def _gzip_then_zeros(prefix: bytes, zeros: int, *, level: int = 9) -> bytes:
    """gzip of ``prefix + bytes(zeros)``, built without compressing every zero.

    After a full flush a deflate stream refers to nothing before it, so the blocks for 64 MiB
    of zeros are compressed once and repeated (as parallel gzip tools join their pieces).
    """
    unit_size = 64 * MiB
    assert zeros % unit_size == 0
    head = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    unit = block.compress(bytes(unit_size)) + block.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    crc = zlib.crc32(prefix)
    zero_unit = bytes(unit_size)
    for _ in range(zeros // unit_size):
        crc = zlib.crc32(zero_unit, crc)
    size = len(prefix) + zeros
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = (crc & 0xFFFFFFFF).to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    return header + first + unit * (zeros // unit_size) + tail + trailer


def _declaring(shape: tuple[int, ...], dtype) -> bytes:
    """The 352 bytes of a NIfTI-1 file that declares ``shape`` voxels of ``dtype``."""
    tiny = volumes.image_to_bytes(np.zeros((2, 2, 2), dtype), np.eye(4))
    header = bytearray(zlib.decompress(tiny, 16 + zlib.MAX_WBITS)[:352])
    header[42 : 42 + 2 * len(shape)] = np.array(shape, "<i2").tobytes()
    return bytes(header)


def _scan_nii() -> bytes:
    image = (np.indices(SCAN_SHAPE).sum(0) % 251).astype(np.int16)
    return zlib.decompress(volumes.image_to_bytes(image, np.eye(4)), 16 + zlib.MAX_WBITS)


class Upload:
    """One kind of hostile request: where it goes, its headers and its body, in chunks."""

    def __init__(self, name: str, path: str, token: str, content_type: str, parts: list, length: int) -> None:
        self.name, self.path, self.token, self.content_type = name, path, token, content_type
        self.parts, self.length = parts, length

    def chunks(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, int):  # that many zero bytes
                zero = bytes(MiB)
                left = part
                while left > 0:
                    yield zero[: min(left, MiB)]
                    left -= MiB
            else:
                for start in range(0, len(part), MiB):
                    yield part[start : start + MiB]


def _multipart(name: str, path: str, token: str, parts: list) -> Upload:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="upload.nii.gz"\r\n'
        "Content-Type: application/gzip\r\n\r\n"
    ).encode()
    foot = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + sum(p if isinstance(p, int) else len(p) for p in parts) + len(foot)
    return Upload(name, path, token, f"multipart/form-data; boundary={BOUNDARY}", [head, *parts, foot], length)


def _raw(name: str, path: str, token: str, parts: list) -> Upload:
    length = sum(p if isinstance(p, int) else len(p) for p in parts)
    return Upload(name, path, token, "application/octet-stream", parts, length)


def build_uploads(setup: dict) -> list[Upload]:
    scans = f"/api/v1/projects/{setup['project']}/scans/"
    revisions = f"/api/v1/assignments/{setup['assignment']}/revisions/?base_revision=none"
    lead, rater = setup["lead"], setup["rater"]
    bomb = _gzip_then_zeros(_declaring((1024, 1024, 1024), np.int16), 2048 * MiB)
    small_bomb = _gzip_then_zeros(_declaring((256, 256, 64), np.int16), 2048 * MiB)
    trailing = _gzip_then_zeros(_scan_nii(), 1024 * MiB)
    labels = volumes.label_map_to_bytes(np.zeros(SCAN_SHAPE, np.uint8), np.array(setup["affine"]))
    second = labels + _gzip_then_zeros(b"", 256 * MiB)
    return [
        _multipart(f"bomb, declares 2 GiB ({len(bomb) / 1e6:.1f} MB)", scans, lead, [bomb]),
        _multipart(f"bomb, declares 8 MiB ({len(small_bomb) / 1e6:.1f} MB)", scans, lead, [small_bomb]),
        _multipart(f"scan + 1 GiB zeros ({len(trailing) / 1e6:.1f} MB)", scans, lead, [trailing]),
        _multipart("600 MiB multipart", scans, lead, [600 * MiB]),
        _raw("600 MiB raw body", revisions, rater, [600 * MiB]),
        _raw(f"second gzip member ({len(second) / 1e6:.1f} MB)", revisions, rater, [second]),
    ]


# --- the server ---------------------------------------------------------------------------------------


def idle_memory(master: int, settle_s: float = 1.0) -> int:
    """The median of ten samples, 50 ms apart, after ``settle_s`` of quiet."""
    time.sleep(settle_s)
    samples = []
    for _ in range(10):
        samples.append(server_memory(master)[1])
        time.sleep(0.05)
    return int(np.median(samples))


# --- the client ---------------------------------------------------------------------------------------


def send(port: int, upload: Upload) -> tuple[str, float]:
    """Send ``upload`` over a plain socket, reading the answer while the body still goes out
    (a server may answer and close before the body is sent); returns (status, seconds)."""
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)
    head = (
        f"POST {upload.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {upload.token}\r\n"
        f"Content-Type: {upload.content_type}\r\nContent-Length: {upload.length}\r\nConnection: close\r\n\r\n"
    )
    answer = bytearray()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                answer.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        sock.sendall(head.encode())
        for chunk in upload.chunks():
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server answered and closed: the rest of the body is not wanted
    reader.join(timeout=300)
    sock.close()
    elapsed = time.perf_counter() - started
    status = answer[9:12].decode() if answer.startswith(b"HTTP/1.") else "reset"
    error = ""
    if b"\r\n\r\n" in answer:
        try:
            error = json.loads(bytes(answer).split(b"\r\n\r\n", 1)[1]).get("error", "")
        except ValueError:
            pass
    return (f"{status} {error}".strip(), elapsed)


def fire(port: int, upload: Upload, concurrency: int) -> list[tuple[str, float]]:
    results: list = [None] * concurrency

    def one(i: int) -> None:
        results[i] = send(port, upload)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _env(data_dir: Path, app_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "mriannot.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "MRIANNOT_DATA_DIR": str(data_dir),
            "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
            "REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: queued work stays queued
            "PYTHONPATH": str(app_dir),
        }
    )
    return env


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--concurrency", type=int, default=4, help="copies of each upload sent at once")
    parser.add_argument("--app-dir", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    args = parser.parse_args(argv)
    app_dir = args.app_dir.resolve()
    python = sys.executable
    data_dir = Path(tempfile.mkdtemp(prefix="mriannot-bench-hostile-"))
    env = _env(data_dir, app_dir)
    server = None
    started = time.perf_counter()

    def stage(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {what}", flush=True)

    try:
        stage("migrating a throwaway database; a project, two users, a scan ...")
        out = subprocess.run(
            [python, "manage.py", "shell", "-c", SETUP % {"shape": SCAN_SHAPE}],
            cwd=app_dir,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        setup = json.loads(next(line for line in out.splitlines() if line.startswith("SETUP "))[6:])
        stage("building the payloads ...")
        uploads = build_uploads(setup)

        port = free_port()
        gunicorn = [python, "-m", "gunicorn", "mriannot.wsgi", "--preload", "--workers", str(args.workers)]
        gunicorn += ["--bind", f"127.0.0.1:{port}", "--timeout", "120", "--log-level", "warning"]
        stage(f"starting gunicorn with {args.workers} workers ...")
        log = open(data_dir / "gunicorn.log", "w")  # open while the server runs
        server = subprocess.Popen(gunicorn, cwd=app_dir, env=env, start_new_session=True, stdout=log, stderr=log)
        wait_for_port(port, server)
        stage("warming the workers up ...")
        # Warm every worker up (URL conf, DRF, nibabel): small valid uploads, more than workers.
        small = volumes.image_to_bytes(np.ones((8, 8, 8)), np.eye(4))
        warm = _multipart("warm-up", uploads[0].path, setup["lead"], [small])
        for _ in range(3):
            fire(port, warm, 2 * args.workers)
        idle = idle_memory(server.pid)
        workers = len(children(server.pid))
        print(
            f"\ngunicorn --preload: {workers} sync workers on {os.cpu_count()} cores; idle anonymous memory of "
            f"master + workers {idle / MiB:.0f} MiB; {args.concurrency} uploads of each kind at once\n"
        )
        print(f"{'upload':36s}{'peak above idle':>16s}{'wall s':>8s}   answers")
        for upload in uploads:
            before = idle_memory(server.pid, settle_s=0.5)
            with PeakSampler(server.pid, interval=0.02) as sampler:
                started = time.perf_counter()
                results = fire(port, upload, args.concurrency)
                wall = time.perf_counter() - started
            answers = sorted({status for status, _ in results})
            counts = ", ".join(f"{sum(s == a for s, _ in results)} x {a}" for a in answers)
            rise = max(0, sampler.peak_anon - before) / MiB
            print(f"{upload.name:36s}{rise:12.0f} MiB{wall:8.1f}   {counts}", flush=True)
        return 0
    except BaseException:
        log_path = data_dir / "gunicorn.log"
        if log_path.exists():
            print("gunicorn's log, last lines:\n" + "\n".join(log_path.read_text().splitlines()[-30:]))
        raise
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
