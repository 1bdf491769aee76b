#!/usr/bin/env bash
# perf/coldfiles.sh — does a cold file stall the hot requests served next to it? (issue #13)
#
# For each server, side by side in one run: 32 connections on a hot 4 KiB file (wrk: p50, p99, max, req/s),
# once alone and once while 4 clients download an evicted 1 GiB file (each its own quarter, by Range, at
# about 32 MiB/s). This VM's disk is fast (the host caches it), so the server's disk reads are throttled to
# about 200 MiB/s, as a slow disk would be: cgroup v1 blkio or v2 io.max, made and removed here; skipped,
# and the report says so, without root.
#
# Servers, all pinned to core 0 like perf/run.sh's (clients on core 1):
#   splice           the sample on SpliceTransport (cachestat before each chunk, cold chunks read off the loop)
#   splice-noprefetch the same with --SpliceTransport:PrefetchUncachedFiles=false (sendfile blocks the loop)
#   sockets          the sample on Kestrel's socket transport
#   nginx            sendfile on, tcp_nopush on (sendfile blocks the worker)
#   nginx-aio        the same plus `aio threads` (disk reads in a thread pool)
#
# Then the disk waits themselves: each splice server once more under strace, reporting how long sendfile took
# on the event-loop threads (the time every other connection on that loop waited).
#
#   perf/coldfiles.sh [--rounds N] [--duration S]     results: perf/results/coldfiles.md
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
REPO_DIR=$(dirname "$PERF_DIR")
CACHE_DIR=$PERF_DIR/.cache
FILES_DIR=$CACHE_DIR/coldfiles       # its own folder: perf/run.sh's files stay hot for its own runs
SAMPLE_PROJECT=$REPO_DIR/samples/StaticFileServer
SAMPLE_COPY_DIR=$CACHE_DIR/coldfiles-sample
RESULTS=$PERF_DIR/results/coldfiles.md

readonly SERVER_CORE=0
readonly CLIENT_CORE=1
readonly SERVERS=(splice splice-noprefetch sockets nginx nginx-aio)
declare -A PORT=([splice]=18481 [splice-noprefetch]=18482 [sockets]=18483 [nginx]=18484 [nginx-aio]=18485)
# The loop-stall pass (see loop_stalls): the .NET splice servers once more, under strace, on ports of their own.
readonly STALL_SERVERS=(splice splice-noprefetch)
declare -A STALL_PORT=([splice]=18486 [splice-noprefetch]=18487)
readonly STALL_MS=(10 50)            # the issue's bound is 50 ms for a disk wait; 10 ms is a visible hiccup
readonly STOP_TIMEOUT_S=5
readonly HOT_CONNECTIONS=32
readonly COLD_CLIENTS=4
readonly COLD_SIZE=$((1024 * 1024 * 1024))
readonly COLD_RATE=32M               # per cold client (curl --limit-rate): a slow download, as over a WAN
readonly DISK_READ_BPS=$((200 * 1024 * 1024))   # the server's disk, throttled as a slow disk would be
readonly DOTNET_WARMUP_S=40          # a .NET server pinned to one core needs ~30 s of load to reach steady speed
readonly COLD_HEAD_START_S=1         # the cold downloads start first, so the hot run sees them from its start

ROUNDS=2
DURATION_S=8    # a cold client reads its 256 MiB quarter in 8 s at 32 MiB/s: it stays cold all run long
while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION_S=$2; shift 2 ;;
    *) echo "usage: perf/coldfiles.sh [--rounds N] [--duration S]" >&2; exit 2 ;;
  esac
done


TMP_DIR=$(mktemp -d /tmp/splice-cold.XXXXXX)
declare -A SERVER_PID=()
CGROUP=""
THROTTLE="none (not root, or no blkio/io controller): the VM's fast disk makes cold reads cheap, read the figures as such"

cleanup() {
  local name
  for name in "${!SERVER_PID[@]}"; do stop_pid "${SERVER_PID[$name]}"; done
  if [[ -n $CGROUP && -d $CGROUP ]]; then
    # Anything still inside goes back to the root group, then the group goes.
    while read -r pid; do echo "$pid" >"$(dirname "$CGROUP")/cgroup.procs" 2>/dev/null || true; done <"$CGROUP/cgroup.procs"
    rmdir "$CGROUP" 2>/dev/null || true
  fi
  rm -rf "$TMP_DIR"
}
trap cleanup EXIT INT TERM


make_files() {
  mkdir -p "$FILES_DIR"
  head -c 4096 /dev/urandom >"$FILES_DIR/hot.bin"
  if [[ ! -f $FILES_DIR/cold.bin || $(stat -c %s "$FILES_DIR/cold.bin") != "$COLD_SIZE" ]]; then
    log "generating the 1 GiB cold file (once; cached in perf/.cache/coldfiles)"
    head -c "$COLD_SIZE" /dev/urandom >"$FILES_DIR/cold.bin.tmp" && mv "$FILES_DIR/cold.bin.tmp" "$FILES_DIR/cold.bin"
  fi
}

# Written back, then dropped from the page cache: the next reads go to the (throttled) disk.
evict_cold_file() {
  python3 - "$FILES_DIR/cold.bin" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)
EOF
}

# Percentage of the cold file's pages in the page cache (cachestat through python is not available: fincore).
cold_cached_pct() {
  fincore -b -n -o RES,SIZE "$FILES_DIR/cold.bin" 2>/dev/null | awk '{printf "%.0f", $2 ? 100 * $1 / $2 : 0}'
}

# A throttled group for the servers' disk reads: cgroup v2 io.max, else v1 blkio.throttle.
make_throttle() {
  [[ $(id -u) == 0 ]] || return 0
  local dev; dev=$(lsblk -no MAJ:MIN "$(findmnt -no SOURCE --target "$FILES_DIR")" 2>/dev/null | head -n1 | tr -d ' ')
  [[ -n $dev ]] || return 0
  if grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo +io >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    CGROUP=/sys/fs/cgroup/splice-cold-$$
    mkdir "$CGROUP" && echo "$dev rbps=$DISK_READ_BPS" >"$CGROUP/io.max" || { CGROUP=""; return 0; }
    THROTTLE="cgroup v2 io.max $dev rbps=$DISK_READ_BPS (200 MiB/s)"
  elif [[ -f /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device ]]; then
    CGROUP=/sys/fs/cgroup/blkio/splice-cold-$$
    mkdir "$CGROUP" && echo "$dev $DISK_READ_BPS" >"$CGROUP/blkio.throttle.read_bps_device" || { CGROUP=""; return 0; }
    THROTTLE="cgroup v1 blkio.throttle.read_bps_device $dev $DISK_READ_BPS (200 MiB/s)"
  fi
}

# Puts a server and its children (nginx's worker) into the throttled group.
throttle_server() {
  [[ -n $CGROUP ]] || return 0
  local pid
  for pid in "$1" $(pgrep -P "$1" || true); do echo "$pid" >"$CGROUP/cgroup.procs"; done
}

write_nginx_config() {
  local dir=$1 port=$2 aio=$3
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<EOF
# Generated by perf/coldfiles.sh.
user root;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    $aio
    keepalive_requests 1000000000;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$port; root $FILES_DIR; }
}
EOF
}

start_server() {
  local name=$1 port=${PORT[$1]} cmd
  case "$name" in
    splice) cmd="env DOTNET_gcServer=0 taskset -c $SERVER_CORE $SAMPLE_COPY_DIR/StaticFileServer --root $FILES_DIR --urls http://127.0.0.1:$port --transport splice" ;;
    splice-noprefetch) cmd="env DOTNET_gcServer=0 taskset -c $SERVER_CORE $SAMPLE_COPY_DIR/StaticFileServer --root $FILES_DIR --urls http://127.0.0.1:$port --transport splice --SpliceTransport:PrefetchUncachedFiles=false" ;;
    sockets) cmd="env DOTNET_gcServer=0 taskset -c $SERVER_CORE $SAMPLE_COPY_DIR/StaticFileServer --root $FILES_DIR --urls http://127.0.0.1:$port --transport sockets" ;;
    nginx|nginx-aio)
      local aio=""; [[ $name == nginx-aio ]] && aio="aio threads;"
      write_nginx_config "$TMP_DIR/$name" "$port" "$aio"
      cmd="taskset -c $SERVER_CORE nginx -p $TMP_DIR/$name -c $TMP_DIR/$name/nginx.conf -e $TMP_DIR/$name/error.log -g 'daemon off;'" ;;
  esac
  ! ss -Hltn "sport = :$port" | grep -q . || die "port $port is in use (another perf/coldfiles.sh?)"
  echo "server $name: $cmd" >>"$TMP_DIR/commands.txt"
  eval "exec $cmd" >"$TMP_DIR/$name.log" 2>&1 &
  SERVER_PID[$name]=$!
  local deadline=$((SECONDS + 30))
  until curl -sf -o /dev/null "http://127.0.0.1:$port/hot.bin"; do
    ((SECONDS < deadline)) && kill -0 "${SERVER_PID[$name]}" 2>/dev/null || { cat "$TMP_DIR/$name.log" >&2; die "$name did not start"; }
    sleep 0.2
  done
  throttle_server "${SERVER_PID[$name]}"
}

# One wrk run on the hot file: echoes "p50_us p99_us max_us req_per_s errors".
hot_run() {
  local port=$1 out=$TMP_DIR/wrk.out
  taskset -c $CLIENT_CORE wrk -t1 -c$HOT_CONNECTIONS -d${DURATION_S}s --latency -s "$PERF_DIR/report.lua" \
    "http://127.0.0.1:$port/hot.bin" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
  declare -A r=(); read_wrk_result "$out" r "wrk on port $port"
  echo "${r[p50_us]} ${r[p99_us]} ${r[max_us]} $((r[requests] * 1000000 / r[duration_us])) $((r[connect] + r[read] + r[write] + r[status] + r[timeout]))"
}

# The cold downloads, each its own quarter of the file; echoes their PIDs.
start_cold_clients() {
  local port=$1 i quarter=$((COLD_SIZE / COLD_CLIENTS))
  for ((i = 0; i < COLD_CLIENTS; i++)); do
    taskset -c $CLIENT_CORE curl -s -o /dev/null --limit-rate $COLD_RATE -r "$((i * quarter))-$(((i + 1) * quarter - 1))" \
      -w '%{size_download}\n' "http://127.0.0.1:$port/cold.bin" >>"$TMP_DIR/cold-bytes.txt" &
    echo $!
  done
}

measure() {
  local name=$1 round=$2 port=${PORT[$1]} alone with pids cached
  alone=$(hot_run "$port")
  evict_cold_file
  cached=$(cold_cached_pct)
  : >"$TMP_DIR/cold-bytes.txt"
  pids=$(start_cold_clients "$port")
  sleep $COLD_HEAD_START_S
  with=$(hot_run "$port")
  local pid; for pid in $pids; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  echo "$name $round $alone $with $cached" >>"$TMP_DIR/raw.txt"
  log "$name round $round: alone p50/p99/max ${alone% * *} us; with cold downloads ${with% * *} us (cold file ${cached}% cached before)"
}

# The disk waits themselves, which latency percentiles only hint at on a noisy machine: each splice server once
# more under strace (seccomp-bpf: only sendfile stops the tracee, and its timing, -T, is the kernel's), with
# the cold downloads and the hot load running. Loop threads are named splice-loop-N, so sendfile's time on a
# loop is the time that loop's other connections waited. Appends "name calls longest_ms over10 over50
# longest_elsewhere_ms" to stalls.txt.
loop_stalls() {
  local name=$1 port=${STALL_PORT[$1]} args="" trace=$TMP_DIR/$1.strace tracer server pids pid t
  [[ $name == splice-noprefetch ]] && args="--SpliceTransport:PrefetchUncachedFiles=false"
  ! ss -Hltn "sport = :$port" | grep -q . || die "port $port is in use (another perf/coldfiles.sh?)"
  env DOTNET_gcServer=0 taskset -c $SERVER_CORE strace -f --seccomp-bpf -T -e trace=sendfile -o "$trace" \
    "$SAMPLE_COPY_DIR/StaticFileServer" --root "$FILES_DIR" --urls "http://127.0.0.1:$port" --transport splice $args \
    >"$TMP_DIR/$name-traced.log" 2>&1 &
  tracer=$!
  local deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null "http://127.0.0.1:$port/hot.bin"; do
    ((SECONDS < deadline)) && kill -0 "$tracer" 2>/dev/null || { cat "$TMP_DIR/$name-traced.log" >&2; die "$name under strace did not start"; }
    sleep 0.2
  done
  throttle_server "$tracer"
  server=$(pgrep -P "$tracer" | head -n1)
  evict_cold_file
  pids=$(start_cold_clients "$port")
  sleep $COLD_HEAD_START_S
  hot_run "$port" >/dev/null
  for t in /proc/"$server"/task/*; do echo "${t##*/} $(<"$t/comm")"; done >"$TMP_DIR/$name.threads"
  for pid in $pids; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  stop_pid "$server"; stop_pid "$tracer"
  python3 - "$name" "$trace" "$TMP_DIR/$name.threads" "${STALL_MS[@]}" >>"$TMP_DIR/stalls.txt" <<'EOF'
import re, sys
name, trace, threads, *bounds = sys.argv[1:]
names = dict(line.split(None, 1) for line in open(threads).read().splitlines())
loop, elsewhere = [], []
for line in open(trace):
    m = re.match(r"(\d+)\s+sendfile\(.*<([\d.]+)>$", line.strip())
    if m:
        (loop if names.get(m[1], "").startswith("splice-loop") else elsewhere).append(float(m[2]) * 1000)
over = [sum(1 for d in loop if d > float(b)) for b in bounds]
print(name, len(loop), f"{max(loop, default=0):.1f}", *over, f"{max(elsewhere, default=0):.1f}")
EOF
  log "$name under strace: $(tail -n1 "$TMP_DIR/stalls.txt")"
}

main() {
  install_packages_for wrk=wrk nginx=nginx-light curl=curl strace=strace
  make_files
  log "building the sample (Release)"
  dotnet build -c Release "$SAMPLE_PROJECT" -nologo -v q >"$TMP_DIR/build.log" 2>&1 || { tail -n 30 "$TMP_DIR/build.log" >&2; die "build failed"; }
  rm -rf "$SAMPLE_COPY_DIR"; cp -a "$SAMPLE_PROJECT/bin/Release/net10.0" "$SAMPLE_COPY_DIR"
  make_throttle
  log "throttle: $THROTTLE"
  local name round
  for name in "${SERVERS[@]}"; do start_server "$name"; done
  for name in splice splice-noprefetch sockets; do
    log "warming $name for ${DOTNET_WARMUP_S}s"
    taskset -c $CLIENT_CORE wrk -t1 -c$HOT_CONNECTIONS -d${DOTNET_WARMUP_S}s "http://127.0.0.1:${PORT[$name]}/hot.bin" >/dev/null
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for name in "${SERVERS[@]}"; do measure "$name" "$round"; done
  done
  for name in "${SERVERS[@]}"; do stop_pid "${SERVER_PID[$name]}"; unset "SERVER_PID[$name]"; done
  for name in "${STALL_SERVERS[@]}"; do loop_stalls "$name"; done
  write_report
}

write_report() {
  local commit; commit=$(git -C "$REPO_DIR" log -1 --format=%h -- src 2>/dev/null || echo unknown)
  python3 - "$TMP_DIR/raw.txt" "$RESULTS" "$commit" "$THROTTLE" "$ROUNDS" "$DURATION_S" "$(cat /proc/loadavg)" "$TMP_DIR/commands.txt" "$TMP_DIR/stalls.txt" <<'EOF'
import sys, statistics
raw, out, commit, throttle, rounds, duration, load, commands, stalls = sys.argv[1:]
rows = {}
for line in open(raw):
    f = line.split()
    name = f[0]
    alone = list(map(int, f[2:7])); with_ = list(map(int, f[7:12])); cached = f[12]
    rows.setdefault(name, []).append((alone, with_, cached))
def ms(us): return f"{us / 1000:.2f}"
def cell(vals):
    m = statistics.median(vals)
    return ms(m) if min(vals) == max(vals) else f"{ms(m)} ({ms(min(vals))}–{ms(max(vals))})"
order = ["splice", "splice-noprefetch", "sockets", "nginx", "nginx-aio"]
label = {"splice": "splice (prefetch on, default)", "splice-noprefetch": "splice, PrefetchUncachedFiles=false",
         "sockets": "Kestrel sockets", "nginx": "nginx (sendfile, no aio)", "nginx-aio": "nginx, aio threads"}
with open(out, "w") as o:
    o.write("# Hot 4 KiB requests next to cold 1 GiB downloads\n\n")
    o.write(f"- Measured: `src/` as of commit {commit}; `perf/coldfiles.sh --rounds {rounds} --duration {duration}`\n")
    o.write(f"- Load average at the end: {load} (the machine is shared; other work may have run)\n")
    o.write(f"- Server disk reads throttled: {throttle}\n")
    o.write("- Every server pinned to core 0, clients to core 1. Hot: wrk -t1 -c32 on a 4 KiB file. Cold: 4 curl clients, each "
            "reading its own quarter of an evicted 1 GiB file at 32 MiB/s, started 1 s before the hot run.\n")
    o.write("- Cells: median over rounds (min–max), in ms. **× p99** = p99 with the cold downloads ÷ p99 alone.\n\n")
    o.write("| server | alone p50 | alone p99 | alone max | with cold p50 | with cold p99 | with cold max | × p99 | req/s alone → with cold | errors |\n")
    o.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for name in order:
        if name not in rows: continue
        r = rows[name]
        a = lambda i: [x[0][i] for x in r]; w = lambda i: [x[1][i] for x in r]
        ratio = statistics.median([x[1][1] / max(x[0][1], 1) for x in r])
        o.write(f"| {label[name]} | {cell(a(0))} | {cell(a(1))} | {cell(a(2))} | {cell(w(0))} | {cell(w(1))} | {cell(w(2))} | "
                f"{ratio:.2f}× | {statistics.median(a(3)):,.0f} → {statistics.median(w(3)):,.0f} | {sum(a(4)) + sum(w(4))} |\n")
    o.write("\n## Disk waits on the event loops\n\n")
    o.write("Each splice server once more under `strace -f --seccomp-bpf -T -e trace=sendfile`, with the cold downloads and "
            "the hot load running. A sendfile on a loop thread (`splice-loop-N`) that waits for the disk makes every "
            "other connection on that loop wait as long. strace slows each traced call a little; the long waits are the disk's.\n\n")
    o.write("| server | sendfile calls on loops | longest on a loop, ms | > 10 ms | > 50 ms | longest on other threads, ms |\n")
    o.write("|---|---:|---:|---:|---:|---:|\n")
    for line in open(stalls):
        name, calls, longest, over10, over50, other = line.split()
        o.write(f"| {label[name]} | {int(calls):,} | {longest} | {over10} | {over50} | {other} |\n")
    o.write("\n## Servers\n\n```\n" + open(commands).read() + "```\n")
print(open(out).read())
EOF
}

main "$@"
