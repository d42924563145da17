"""Watching a server the benchmarks start: its memory (PSS from /proc) and its port.

PSS counts a page shared between the gunicorn master and a forked worker half to each;
``anon`` leaves out file-backed pages (code, libraries), whose shares drift as other
processes on the machine come and go. Linux only.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def pss(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of ``pid`` in bytes; (0, 0) for a process that just exited."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line and not line[0].isdigit())
        return int(fields["Pss"].split()[0]) * 1024, int(fields.get("Pss_Anon", fields["Pss"]).split()[0]) * 1024
    except (OSError, KeyError):
        return 0, 0


def server_memory(master: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of a master process and its children together."""
    total = anon = 0
    for pid in [master, *children(master)]:
        one, one_anon = pss(pid)
        total += one
        anon += one_anon
    return total, anon


class PeakSampler:
    """Samples :func:`server_memory` every ``interval`` s in a thread; keeps the peaks and the count."""

    def __init__(self, master: int, interval: float = 0.05) -> None:
        self.master, self.interval = master, interval
        self.peak = self.peak_anon = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        total, anon = server_memory(self.master)
        self.peak, self.peak_anon = max(self.peak, total), max(self.peak_anon, anon)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once something listens on ``port``; exit if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit("the server did not start listening in time")
