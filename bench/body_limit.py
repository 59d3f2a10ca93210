"""An unauthenticated 100 MB form sent to /login, and what it costs the server and everyone else (issue 23).

    .venv/bin/python bench/body_limit.py [--mb 100] [--code DIR]

Starts `monoscope serve` on a fresh SQLite database (the code under DIR first on the path: another checkout or an
exported commit, to measure before and after), then a prober that GETs /api/v1/overview every 20 ms on a keep-alive
connection (another user). It sends the form through a raw socket, body in 1 MiB writes, reading between writes, and
stops sending once the server answers. Prints the answer's status and how long it took, how much of the body was
written by then, the server's resident memory before and at its peak (VmHWM), and the prober's median and p95 latency
in the 2 s before and during the attempt (until its answer, at least 2 s).
"""

from __future__ import annotations

import argparse
import http.client
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from web import free_port, get, wait_ready  # bench/web.py: the same server start and GET

EXE = Path(sys.executable).with_name("monoscope")


def memory_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


class Prober(threading.Thread):
    """Another user: GET /api/v1/overview every 20 ms, recording (time, latency)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.samples, self.stop = port, [], threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            start = time.perf_counter()
            status, _ = get(conn, "/api/v1/overview")
            assert status == 200, status
            self.samples.append((start, time.perf_counter() - start))
            time.sleep(0.02)

    def between(self, t0: float, t1: float) -> dict[str, float]:
        ms = sorted(1000 * lat for t, lat in self.samples if t0 <= t <= t1)
        if not ms:
            return {"n": 0}
        return {"n": len(ms), "median_ms": round(statistics.median(ms), 1),
                "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1)}


def attack(port: int, megabytes: int) -> dict:
    """Send the form; return the status, seconds to the answer and bytes sent."""
    body_size = megabytes * 1000 * 1000
    head = (f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {body_size}\r\n\r\n").encode()
    chunk = b"token=" + b"a" * ((1 << 20) - 6)
    sent, answer = 0, b""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head)
        while True:
            readable, writable, _ = select.select([s], [s] if sent < body_size else [], [], 120)
            if readable:
                part = s.recv(65536)
                answer += part
                if not part or b"\r\n\r\n" in answer:
                    break
            elif writable:
                piece = chunk[: body_size - sent]
                try:
                    s.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(piece)
            else:
                break
    seconds = time.perf_counter() - start
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else None
    return {"status": status, "seconds": round(seconds, 3), "body_sent_mb": round(sent / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="Body size in MB (10^6 bytes)")
    parser.add_argument("--code", type=Path, default=None, help="Put this source tree first on the path")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.code is not None:
        env["PYTHONPATH"] = str(args.code.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen([str(EXE), "serve", "--db", f"sqlite:///{tmp}/bench.db", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, server)
            prober = Prober(port)
            prober.start()
            time.sleep(2)
            before = memory_kib(server.pid)
            t0 = time.perf_counter()
            result = attack(port, args.mb)
            t1 = max(time.perf_counter(), t0 + 2)  # "during": until the answer, and at least 2 s
            time.sleep(max(0.0, t1 - time.perf_counter()) + 0.5)
            prober.stop.set()
            prober.join()
            after = memory_kib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{args.mb} MB form to /login: status {result['status']} after {result['seconds']} s, "
          f"{result['body_sent_mb']} MB of the body written to the socket by then")
    print(f"server memory: {before['VmRSS'] / 1024:.0f} MiB resident before, peak {after['VmHWM'] / 1024:.0f} MiB")
    print(f"another user's GET /api/v1/overview: before {prober.between(t0 - 2, t0)}, "
          f"during {prober.between(t0, t1)}")


if __name__ == "__main__":
    main()
