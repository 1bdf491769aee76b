#!/usr/bin/env python3
"""Many slow readers of one file against the sample on splice, then sockets: the server's threads and RSS.

Usage: perf/slow-clients.py [--clients 500] [--rate 100000] [--duration 20]     writes perf/results/slow-clients.md"""
import argparse, asyncio, os, resource, socket, subprocess, sys, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "samples/StaticFileServer"
CACHE = REPO / "perf/.cache/slow-clients"
FILE_SIZE = 100 * 1024 * 1024          # the 100 MB file
READ_INTERVAL = 0.1                     # each client reads 10 times a second...
CLIENT_RCVBUF = 64 * 1024               # ...through a small receive buffer, so the server feels the slowness
START_TIMEOUT = 30                      # seconds a server may take to answer its first request
PORTS = {"splice": 6301, "sockets": 6302}


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


async def slow_client(port, rate, end, received):
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        while loop.time() < end and (data := await loop.sock_recv(sock, int(rate * READ_INTERVAL))):
            received[0] += len(data)
            await asyncio.sleep(READ_INTERVAL)


async def measure(transport, port, args):
    """One table row: threads before and max, RSS before and max, RSS growth over the second half (MB), MB/s."""
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(f"env DOTNET_gcServer=0 taskset -c 0 {PROJECT}/bin/Release/net10.0/StaticFileServer "
                              f"--transport {transport} --root {CACHE} --urls {url}".split(), stdout=subprocess.DEVNULL)
    try:
        if subprocess.run(f"curl -sf -o /dev/null --retry-connrefused --retry {START_TIMEOUT} --retry-delay 1 "
                          f"{url}/plaintext".split()).returncode:
            sys.exit(f"server at {url} did not answer within {START_TIMEOUT}s")
        base_threads, base_rss = status(server.pid, "Threads"), status(server.pid, "VmRSS")
        end, received, threads, rss = asyncio.get_running_loop().time() + args.duration, [0], [], []
        clients = [asyncio.create_task(slow_client(port, args.rate, end, received)) for _ in range(args.clients)]
        for _ in range(args.duration):
            await asyncio.sleep(1)
            threads.append(status(server.pid, "Threads"))
            rss.append(status(server.pid, "VmRSS"))
        await asyncio.gather(*clients, return_exceptions=True)
        return (f"| {transport} | {base_threads} | {max(threads)} | {base_rss / 1024:.0f} | {max(rss) / 1024:.0f} | "
                f"{(rss[-1] - rss[len(rss) // 2]) / 1024:.1f} | {received[0] / args.duration / 1e6:.1f} |\n")
    finally:
        server.kill()   # nothing of it is needed now; a graceful stop would wait on the slow connections
        server.wait()


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True).stdout.strip()


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--clients", type=int, default=500)
parser.add_argument("--rate", type=int, default=100_000, help="bytes per second each client reads")
parser.add_argument("--duration", type=int, default=20, help="seconds of slow reading")
args = parser.parse_args()
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
# Built every time (incrementally), so that the server measured is the src/ the result names.
subprocess.run(["dotnet", "build", "-c", "Release", PROJECT, "-nologo", "-v", "q"], check=True)
src = git("log", "-1", "--format=%h", "--", "src") or "unknown"
if git("status", "--porcelain", "--", "src", "samples"):
    src += " (plus uncommitted changes in src/ or samples/)"
CACHE.mkdir(parents=True, exist_ok=True)
big = CACHE / "big.bin"
if not big.exists() or big.stat().st_size != FILE_SIZE:
    big.write_bytes(os.urandom(FILE_SIZE))
table = "".join(asyncio.run(measure(transport, port, args)) for transport, port in PORTS.items())
text = f"""# Slow clients: {args.clients} downloads of a 100 MB file at {args.rate // 1000} KB/s each, {args.duration} s

Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. `src/` as of {src}. Kernel: {os.uname().release}. Command: `python3 perf/slow-clients.py --clients {args.clients} --rate {args.rate} --duration {args.duration}`.
Each server is pinned to core 0 (one event loop for splice). Threads and VmRSS from /proc/<pid>/status, sampled every second.

| transport | threads before | threads max | RSS before (MB) | RSS max (MB) | RSS growth, 2nd half (MB) | delivered (MB/s) |
|---|---|---|---|---|---|---|
{table}
Flat thread counts mean no thread waits on a slow client; flat RSS in the second half means no file bytes pile up in user space.
"""
(REPO / "perf/results/slow-clients.md").write_text(text)
print(text, end="")
