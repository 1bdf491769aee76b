#!/usr/bin/env python3
"""Slow clients against a file server: does any server thread wait on them, and is any file byte buffered?

Starts the sample (Release) with --transport splice and then --transport sockets, each pinned to core 0,
and points CLIENTS concurrent downloads of one 100 MB file at it, each reading RATE bytes/s, for
DURATION seconds. Every second it samples the server's thread count and resident memory from
/proc/<pid>/status. A transport that parked a thread per waiting client would show hundreds of threads;
one that buffered file bytes in user space would show its memory grow with the clients.

Usage: perf/slow-clients.py [--clients 500] [--rate 100000] [--duration 20]
Writes perf/results/slow-clients.md.
"""
import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples/StaticFileServer/bin/Release/net10.0/StaticFileServer"
CACHE = REPO / "perf/.cache/slow-clients"
FILE_SIZE = 100 * 1024 * 1024          # the 100 MB file
READ_INTERVAL = 0.1                     # each client reads 10 times a second...
CLIENT_RCVBUF = 64 * 1024               # ...through a small receive buffer, so the server feels the slowness
START_TIMEOUT = 30                      # seconds a server may take to answer its first request
PORTS = {"splice": 6301, "sockets": 6302}


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


async def wait_for_port(port):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            if b"206" in line:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    sys.exit(f"server on port {port} did not answer within {START_TIMEOUT}s")


async def slow_client(port, rate, stop, received):
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    per_read = int(rate * READ_INTERVAL)
    try:
        while not stop.is_set():
            data = await loop.sock_recv(sock, per_read)
            if not data:
                break
            received[0] += len(data)
            await asyncio.sleep(READ_INTERVAL)
    finally:
        sock.close()


async def measure(transport, args):
    port = PORTS[transport]
    server = subprocess.Popen(["taskset", "-c", "0", str(SAMPLE), "--transport", transport, "--root", str(CACHE),
                               "--urls", f"http://127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              env={**os.environ, "DOTNET_gcServer": "0"})
    try:
        await wait_for_port(port)
        base_threads, base_rss = status(server.pid, "Threads"), status(server.pid, "VmRSS")
        stop, received = asyncio.Event(), [0]
        clients = [asyncio.create_task(slow_client(port, args.rate, stop, received)) for _ in range(args.clients)]
        threads, rss = [], []
        for _ in range(args.duration):
            await asyncio.sleep(1)
            threads.append(status(server.pid, "Threads"))
            rss.append(status(server.pid, "VmRSS"))
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        return {
            "transport": transport, "base_threads": base_threads, "max_threads": max(threads),
            "base_rss_mb": base_rss / 1024, "max_rss_mb": max(rss) / 1024,
            "late_rss_growth_mb": (rss[-1] - rss[len(rss) // 2]) / 1024,
            "mb_per_s": received[0] / args.duration / 1e6,
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def src_commit():
    """The last commit that changed src/, the code measured (with a note when src/ has uncommitted changes)."""
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h", "--", "src"], capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "samples"], capture_output=True, text=True).stdout.strip()
    return head + (" (plus uncommitted changes in src/ or samples/)" if dirty else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=int, default=100_000, help="bytes per second each client reads")
    parser.add_argument("--duration", type=int, default=20, help="seconds of slow reading")
    args = parser.parse_args()

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not SAMPLE.exists():
        subprocess.run(["dotnet", "build", "-c", "Release", str(REPO / "samples/StaticFileServer")], check=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    big = CACHE / "big.bin"
    if not big.exists() or big.stat().st_size != FILE_SIZE:
        big.write_bytes(os.urandom(FILE_SIZE))

    rows = [asyncio.run(measure(t, args)) for t in ("splice", "sockets")]
    lines = [
        f"# Slow clients: {args.clients} downloads of a 100 MB file at {args.rate // 1000} KB/s each, {args.duration} s",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. `src/` as of {src_commit()}. Kernel: {os.uname().release}. Command: `python3 perf/slow-clients.py --clients {args.clients} --rate {args.rate} --duration {args.duration}`.",
        "Each server is pinned to core 0 (one event loop for splice). Threads and VmRSS from /proc/<pid>/status, sampled every second.",
        "",
        "| transport | threads before | threads max | RSS before (MB) | RSS max (MB) | RSS growth, 2nd half (MB) | delivered (MB/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['transport']} | {r['base_threads']} | {r['max_threads']} | {r['base_rss_mb']:.0f} | {r['max_rss_mb']:.0f} | {r['late_rss_growth_mb']:.1f} | {r['mb_per_s']:.1f} |")
    lines += ["", "Flat thread counts mean no thread waits on a slow client; flat RSS in the second half means no file bytes pile up in user space."]
    out = REPO / "perf/results/slow-clients.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
