#!/usr/bin/env bash
# perf/coldfiles.sh — does a cold file stall the hot requests served next to it? (issue #13)
#
#   perf/coldfiles.sh [--rounds N] [--duration S]     results: perf/results/coldfiles.md
#
# For each server, side by side in one run: 32 connections on a hot 4 KiB file (wrk: p50, p99, max, req/s), once
# alone and once while 4 clients download an evicted 1 GiB file (each its own quarter, by Range, at about 32 MiB/s).
# This VM's disk is fast (the host caches it), so the servers' disk reads are throttled to about 200 MiB/s, as a slow
# disk's (a cgroup made and removed here; without root skipped, as the report says). Servers on core 0, clients on 1:
#   splice            the sample on SpliceTransport (cachestat before each chunk, cold chunks read off the loop)
#   splice-noprefetch the same with --SpliceTransport:PrefetchUncachedFiles=false (sendfile blocks the loop)
#   sockets           the sample on Kestrel's socket transport
#   nginx             sendfile on, tcp_nopush on (sendfile blocks the worker)
#   nginx-aio         the same plus `aio threads` (disk reads in a thread pool)
# Then each splice server once more under strace: how long sendfile took on its event-loop threads (the time
# every other connection on that loop waited).
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
FILES_DIR=$CACHE_DIR/coldfiles        # its own folder: perf/run.sh's files stay hot for its own runs

readonly SERVERS=(splice splice-noprefetch sockets nginx nginx-aio)
# <name>-traced: a splice server once more, under strace (loop_stalls), on a port of its own.
declare -A PORT=([splice]=18481 [splice-noprefetch]=18482 [sockets]=18483 [nginx]=18484 [nginx-aio]=18485
                 [splice-traced]=18486 [splice-noprefetch-traced]=18487)
FILES=(hot cold)
declare -A FILE_SIZE=([hot]=4096 [cold]=$((1024 * 1024 * 1024)))
readonly HOT_CONNECTIONS=32 COLD_CLIENTS=4
readonly COLD_RATE=32M                # per cold client (curl --limit-rate): a slow download, as over a WAN
readonly DISK_READ_BPS=$((200 * 1024 * 1024))   # the servers' disk, throttled as a slow disk would be
readonly DOTNET_WARMUP_S=40           # a .NET server pinned to one core needs ~30 s of load to reach steady speed
readonly COLD_HEAD_START_S=1          # the cold downloads start first, so the hot run sees them from its start
STARTUP_TIMEOUT_S=60                  # a server under strace starts slowly
FD_LIMIT=$(ulimit -n)                 # nginx keeps the limit it inherits
ROUNDS=2
DURATION_S=8    # a cold client reads its 256 MiB quarter in 8 s at 32 MiB/s: it stays cold all run long
CGROUP="" COLD_PIDS=()
THROTTLE="none (not root, or no blkio/io controller): the VM's fast disk makes cold reads cheap, read the figures as such"

# lib.sh's cleanup calls this: the cold downloads, then the throttled group (what is still in it moved out first).
cleanup_more() {
  stop_cold
  [[ -n $CGROUP && -d $CGROUP ]] || return 0
  while read -r pid; do echo "$pid" >"$(dirname "$CGROUP")/cgroup.procs" 2>/dev/null || true; done <"$CGROUP/cgroup.procs"
  rmdir "$CGROUP" 2>/dev/null || true
}

# A throttled group for the servers' disk reads (root only): cgroup v2 io.max, else v1 blkio.throttle.
make_throttle() {
  local dev version file limit
  [[ $(id -u) == 0 ]] || return 0
  dev=$(lsblk -no MAJ:MIN "$(findmnt -no SOURCE --target "$FILES_DIR")" 2>/dev/null | head -n1 | tr -d ' ' || true)
  [[ -n $dev ]] || return 0
  if grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo +io >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    CGROUP=/sys/fs/cgroup/splice-cold-$$ version=v2 file=io.max limit="$dev rbps=$DISK_READ_BPS"
  elif [[ -f /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device ]]; then
    CGROUP=/sys/fs/cgroup/blkio/splice-cold-$$ version=v1 file=blkio.throttle.read_bps_device limit="$dev $DISK_READ_BPS"
  else
    return 0
  fi
  mkdir "$CGROUP" && echo "$limit" >"$CGROUP/$file" || { CGROUP=""; return 0; }
  THROTTLE="cgroup $version $file $limit (200 MiB/s)"
}

# Starts a server, waits until it answers, and moves its processes (nginx's worker, strace's tracee) into the
# throttled group. A -traced one runs under strace (seccomp-bpf: only sendfile stops the tracee; its time, -T,
# is the kernel's), into TMP_DIR/<name>.strace.
start_server() {
  local name=$1 port=${PORT[$1]} cmd pid
  case "$name" in
    splice-noprefetch*) cmd=$(dotnet_server_command splice "$port" "" --SpliceTransport:PrefetchUncachedFiles=false) ;;
    splice*|sockets) cmd=$(dotnet_server_command "${name%%-*}" "$port") ;;
    nginx) cmd=$(nginx_server_command "$TMP_DIR/$name" "$port" 1024) ;;
    nginx-aio) cmd=$(nginx_server_command "$TMP_DIR/$name" "$port" 1024 "aio threads;") ;;
  esac
  [[ $name == *-traced ]] && cmd=${cmd/taskset -c $SERVER_CORE/taskset -c $SERVER_CORE strace -f --seccomp-bpf -T -e trace=sendfile -o $TMP_DIR/$name.strace}
  start_server_process "$name" "$cmd"
  wait_for_port "$name"
  if [[ -n $CGROUP ]]; then for pid in $(server_pids "$name"); do echo "$pid" >"$CGROUP/cgroup.procs"; done; fi
}

# One wrk run on the hot file, alone or with the cold downloads from the same server running; appends
# "<name> <round> alone|with p50_us p99_us max_us requests duration_us errors" to raw.txt.
hot_run() {
  local -A r=()
  [[ $3 == alone ]] || start_cold "$1"
  wrk_result r "$1" "$HOT_CONNECTIONS" hot.bin
  [[ $3 == alone ]] || stop_cold
  echo "$1 $2 $3 ${r[p50_us]} ${r[p99_us]} ${r[max_us]} ${r[requests]} ${r[duration_us]} ${r[errors]}" >>"$TMP_DIR/raw.txt"
  log "$1 round $2, $3: p50/p99/max ${r[p50_us]} ${r[p99_us]} ${r[max_us]} us"
}

# Evicts the cold file (written back, then dropped from the page cache: its reads go to the throttled disk) and
# starts the cold downloads from a server, each its own quarter, COLD_HEAD_START_S before the hot run.
start_cold() {
  local i quarter=$((FILE_SIZE[cold] / COLD_CLIENTS)) file=$FILES_DIR/cold.bin
  sync "$file"
  dd if="$file" iflag=nocache count=0 status=none
  log "cold file $(fincore -b -n -o RES,SIZE "$file" | awk '{printf "%.0f", $2 ? 100 * $1 / $2 : 0}')% cached"
  for ((i = 0; i < COLD_CLIENTS; i++)); do
    taskset -c $CLIENT_CORE curl -s -o /dev/null --limit-rate $COLD_RATE -r "$((i * quarter))-$(((i + 1) * quarter - 1))" \
      "$(server_url "$1")/cold.bin" &
    COLD_PIDS+=($!)
  done
  sleep $COLD_HEAD_START_S
}

stop_cold() { stop_pids COLD_PIDS; }

# The disk waits themselves, which latency percentiles only hint at on a noisy machine: a splice server under
# strace during a hot run with the cold downloads. Its loop threads are named splice-loop-N (kept, by thread id,
# for the report), so sendfile's time on a loop is the time that loop's other connections waited.
loop_stalls() {
  local traced=$1-traced server t
  start_server "$traced"
  server=$(pgrep -P "${SERVER_PID[$traced]}" | head -n1)
  hot_run "$traced" stalls with
  for t in /proc/"$server"/task/*; do echo "${t##*/} $(<"$t/comm")"; done >"$TMP_DIR/$traced.threads"
  stop_pid "$server"
  stop_server "$traced"
}

write_report() {
  cat <<EOF
# Hot 4 KiB requests next to cold 1 GiB downloads

- Measured: \`src/\` as of commit $SRC_COMMIT; \`perf/coldfiles.sh --rounds $ROUNDS --duration $DURATION_S\`
- Load average at the end: $(cat /proc/loadavg) (the machine is shared; other work may have run)
- Server disk reads throttled: $THROTTLE
- Every server pinned to core 0, clients to core 1. Hot: wrk -t1 -c32 on a 4 KiB file. Cold: 4 curl clients, each reading its own quarter of an evicted 1 GiB file at 32 MiB/s, started 1 s before the hot run.
- Cells: median over rounds (min–max), in ms. **× p99** = p99 with the cold downloads ÷ p99 alone.

| server | alone p50 | alone p99 | alone max | with cold p50 | with cold p99 | with cold max | × p99 | req/s alone → with cold | errors |
|---|---|---|---|---|---|---|---|---|---|
EOF
  PYTHONPATH=$PERF_DIR python3 - "$TMP_DIR" <<'EOF'
import re, statistics as st, sys
from tables import cell
tmp = sys.argv[1]
label = {"splice": "splice (prefetch on, default)", "splice-noprefetch": "splice, PrefetchUncachedFiles=false",
         "sockets": "Kestrel sockets", "nginx": "nginx (sendfile, no aio)", "nginx-aio": "nginx, aio threads"}
runs = {}   # name -> alone|with -> one list per column (p50, p99, max, req/s, errors), a value per round
for line in open(f"{tmp}/raw.txt"):
    name, rnd, kind, p50, p99, mx, requests, us, errors = line.split()
    for i, value in enumerate((int(p50), int(p99), int(mx), int(requests) * 1000000 // int(us), int(errors))):
        runs.setdefault(name, {}).setdefault(kind, [[] for _ in range(5)])[i].append(value)
def ms(us): return f"{us / 1000:.2f}"
for name in (n for n in label if n in runs):
    a, w = runs[name]["alone"], runs[name]["with"]
    ratio = st.median(x / max(y, 1) for x, y in zip(w[1], a[1]))
    print(f"| {label[name]} | {' | '.join(cell(v, ms) for v in a[:3] + w[:3])} | "
          f"{ratio:.2f}× | {st.median(a[3]):,.0f} → {st.median(w[3]):,.0f} | {sum(a[4]) + sum(w[4])} |")
print("\n## Disk waits on the event loops\n")
print("Each splice server once more under `strace -f --seccomp-bpf -T -e trace=sendfile`, with the cold downloads and the hot load "
      "running. A sendfile on a loop thread (`splice-loop-N`) that waits for the disk makes every other connection on that loop "
      "wait as long. strace slows each traced call a little; the long waits are the disk's.\n")
print("| server | sendfile calls on loops | longest on a loop, ms | > 10 ms | > 50 ms | longest on other threads, ms |\n|---|---:|---:|---:|---:|---:|")
for name in ("splice", "splice-noprefetch"):
    threads = dict(line.split(None, 1) for line in open(f"{tmp}/{name}-traced.threads").read().splitlines())
    loop, elsewhere = [], []
    for line in open(f"{tmp}/{name}-traced.strace"):
        if m := re.match(r"(\d+)\s+sendfile\(.*<([\d.]+)>$", line.strip()):
            (loop if threads.get(m[1], "").startswith("splice-loop") else elsewhere).append(float(m[2]) * 1000)
    # The issue's bound is 50 ms for a disk wait; 10 ms is a visible hiccup.
    print(f"| {label[name]} | {len(loop):,} | {max(loop, default=0):.1f} | {sum(d > 10 for d in loop)} | {sum(d > 50 for d in loop)} | "
          f"{max(elsewhere, default=0):.1f} |")
EOF
  printf '\n## Servers\n\n```\n%s\n```\n' "$(<"$COMMANDS_FILE")"
}

main() {
  parse_options "--rounds --duration" "$@"
  begin_run cold
  install_packages_for wrk=wrk nginx=nginx-light curl=curl strace=strace
  make_files
  build_sample
  make_throttle
  log "throttle: $THROTTLE"
  local name round
  for name in "${SERVERS[@]}"; do start_server "$name"; done
  warm_for "$DOTNET_WARMUP_S" "$HOT_CONNECTIONS" hot.bin splice splice-noprefetch sockets
  for ((round = 1; round <= ROUNDS; round++)); do
    for name in "${SERVERS[@]}"; do
      hot_run "$name" "$round" alone
      hot_run "$name" "$round" with
    done
  done
  for name in "${SERVERS[@]}"; do stop_server "$name"; done
  for name in splice splice-noprefetch; do loop_stalls "$name"; done
  write_report >"$RESULTS_DIR/coldfiles.md"
  cat "$RESULTS_DIR/coldfiles.md"
}

main "$@"
