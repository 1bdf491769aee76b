#!/usr/bin/env bash
# perf/coldfiles.sh — does a cold file stall the hot requests served next to it? (issue #13; perf/README.md)
#   perf/coldfiles.sh [--rounds N] [--duration S]     results: perf/results/coldfiles.md
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
FILES_DIR=$CACHE_DIR/coldfiles        # its own folder: perf/run.sh's files stay hot for its own runs

readonly SERVERS=(splice splice-noprefetch sockets nginx nginx-aio)
declare -A PORT=([splice]=18481 [splice-noprefetch]=18482 [sockets]=18483 [nginx]=18484 [nginx-aio]=18485
                 [splice-traced]=18486 [splice-noprefetch-traced]=18487)
FILES=(hot cold)
declare -A FILE_SIZE=([hot]=4096 [cold]=$((1024 * 1024 * 1024)))
readonly HOT_CONNECTIONS=32 COLD_CLIENTS=4
readonly COLD_RATE=32M                # per cold client (curl --limit-rate): a slow download, as over a WAN
readonly DISK_READ_BPS=$((200 * 1024 * 1024))   # a slow disk's: this VM's is fast (the host caches it)
readonly DOTNET_WARMUP_S=40           # a .NET server pinned to one core needs ~30 s of load to reach steady speed
readonly COLD_HEAD_START_S=1          # the cold downloads start first, so the hot run sees them from its start
FD_LIMIT=$(ulimit -n)                 # nginx keeps the limit it inherits
STARTUP_TIMEOUT_S=60                  # a server under strace starts slowly
ROUNDS=2 DURATION_S=8                 # a cold client takes 8 s for its 256 MiB at 32 MiB/s: cold all run long
CGROUP="" COLD_PIDS=()
THROTTLE="none (not root, or no blkio/io controller): the VM's fast disk makes cold reads cheap, read the figures as such"

# lib.sh's cleanup calls this: the cold downloads, then the throttled group (emptied first, or rmdir fails).
cleanup_more() {
  local pid
  stop_pids COLD_PIDS
  [[ -n $CGROUP && -d $CGROUP ]] || return 0
  while read -r pid; do echo "$pid" >"${CGROUP%/*}/cgroup.procs" 2>/dev/null || true; done <"$CGROUP/cgroup.procs"
  rmdir "$CGROUP" 2>/dev/null || true
}

# A group throttling the servers' disk reads (needs root): cgroup v2 io.max, else v1 blkio.throttle.
make_throttle() {
  local dev root version file limit
  dev=$(lsblk -no MAJ:MIN "$(findmnt -no SOURCE --target "$FILES_DIR")" 2>/dev/null | head -n1 | tr -d ' ' || true)
  if grep -qw io /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    echo +io >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    root=/sys/fs/cgroup version=v2 file=io.max limit="$dev rbps=$DISK_READ_BPS"
  elif [[ -f /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device ]]; then
    root=/sys/fs/cgroup/blkio version=v1 file=blkio.throttle.read_bps_device limit="$dev $DISK_READ_BPS"
  fi
  [[ -n $dev && -n ${root:-} ]] && mkdir "$root/splice-cold-$$" 2>/dev/null || return 0
  CGROUP=$root/splice-cold-$$
  echo "$limit" 2>/dev/null >"$CGROUP/$file" || return 0   # refused: an unthrottled group, which cleanup_more removes
  THROTTLE="cgroup $version $file $limit ($((DISK_READ_BPS >> 20)) MiB/s)"
}

# Starts a server, waits until it answers, and moves its processes (nginx's worker, strace's tracee) into the
# throttled group. A -traced one runs under strace (seccomp-bpf: only sendfile stops the tracee; -T: each call's time).
start_server() {
  local name=$1 port=${PORT[$1]} cmd pid
  local strace="strace -f --seccomp-bpf -T -e trace=sendfile -o $TMP_DIR/$name.strace"
  case "$name" in
    splice-noprefetch*) cmd=$(dotnet_server_command splice "$port" "" --SpliceTransport:PrefetchUncachedFiles=false) ;;
    splice*|sockets) cmd=$(dotnet_server_command "${name%%-*}" "$port") ;;
    nginx) cmd=$(nginx_server_command "$TMP_DIR/$name" "$port" 1024) ;;
    nginx-aio) cmd=$(nginx_server_command "$TMP_DIR/$name" "$port" 1024 "aio threads;") ;;
  esac
  [[ $name != *-traced ]] || cmd=${cmd/"taskset -c $SERVER_CORE"/"taskset -c $SERVER_CORE $strace"}
  start_server_process "$name" "$cmd"
  wait_for_port "$name"
  if [[ -n $CGROUP ]]; then for pid in $(server_pids "$name"); do echo "$pid" >"$CGROUP/cgroup.procs"; done; fi
}

# One wrk run on the hot file, alone or "with" the cold downloads of the evicted cold file, a quarter per client.
hot_run() {
  local -A r=()
  local i quarter=$((FILE_SIZE[cold] / COLD_CLIENTS)) cold=$FILES_DIR/cold.bin
  if [[ $3 == with ]]; then
    dd of="$cold" oflag=nocache conv=notrunc,fdatasync count=0 status=none
    log "cold file $(fincore -b -n -o RES,SIZE "$cold" | awk '{printf "%.0f", $2 ? 100 * $1 / $2 : 0}')% cached"
    for ((i = 0; i < COLD_CLIENTS; i++)); do
      taskset -c $CLIENT_CORE curl -s -o /dev/null --limit-rate $COLD_RATE \
        -r "$((i * quarter))-$(((i + 1) * quarter - 1))" "$(server_url "$1")/cold.bin" &
      COLD_PIDS+=($!)
    done
    sleep $COLD_HEAD_START_S
  fi
  wrk_result r "$1" "$HOT_CONNECTIONS" hot.bin
  stop_pids COLD_PIDS
  echo "$1 $3 ${r[p50_us]} ${r[p99_us]} ${r[max_us]} ${r[requests]} ${r[duration_us]} ${r[errors]}" >>"$TMP_DIR/raw.txt"
  log "$1 round $2, $3: p50/p99/max ${r[p50_us]} ${r[p99_us]} ${r[max_us]} us"
}

parse_options "--rounds --duration" "$@"
begin_run cold
install_packages_for wrk=wrk nginx=nginx-light curl=curl strace=strace
make_files
build_sample
make_throttle
for name in "${SERVERS[@]}"; do start_server "$name"; done
warm_for "$DOTNET_WARMUP_S" "$HOT_CONNECTIONS" hot.bin splice splice-noprefetch sockets
for ((round = 1; round <= ROUNDS; round++)); do
  for name in "${SERVERS[@]}"; do
    for kind in alone with; do hot_run "$name" "$round" "$kind"; done
  done
done
for name in "${SERVERS[@]}"; do stop_server "$name"; done
# Each splice server once more, as <name>-traced, under strace during a hot run with the cold downloads; the ids of
# its loop threads go to the report. The tracee is stopped first: strace then ends on its own, its output complete.
for name in splice splice-noprefetch; do
  start_server "$name-traced"
  tracee=$(pgrep -P "${SERVER_PID[$name-traced]}" | head -n1)
  hot_run "$name-traced" stalls with
  grep -l '^splice-loop' /proc/"$tracee"/task/*/comm | cut -d/ -f5 >"$TMP_DIR/$name-traced.loops" || true
  stop_pid "$tracee"
  stop_server "$name-traced"
done

{
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
runs = {}   # runs[name, alone|with]: a (p50, p99, max, req/s, errors) per round
for name, kind, p50, p99, mx, n, us, errors in (line.split() for line in open(f"{tmp}/raw.txt")):
    runs.setdefault((name, kind), []).append((int(p50), int(p99), int(mx), int(n) * 1000000 // int(us), int(errors)))
def ms(us): return f"{us / 1000:.2f}"
for name in label:
    a, w = (list(zip(*runs[name, kind])) for kind in ("alone", "with"))
    ratio = st.median(x / max(y, 1) for x, y in zip(w[1], a[1]))
    print(f"| {label[name]} | {' | '.join(cell(v, ms) for v in a[:3] + w[:3])} | "
          f"{ratio:.2f}× | {st.median(a[3]):,.0f} → {st.median(w[3]):,.0f} | {sum(a[4]) + sum(w[4])} |")
print("\n## Disk waits on the event loops\n\nEach splice server once more under `strace -f --seccomp-bpf -T -e "
      "trace=sendfile`, with the cold downloads and the hot load running. A sendfile on a loop thread "
      "(`splice-loop-N`) that waits for the disk makes every other connection on that loop wait as long. strace "
      "slows each traced call a little; the long waits are the disk's.\n")
print("| server | sendfile calls on loops | longest on a loop, ms | > 10 ms | > 50 ms | longest on other threads, ms |")
print("|---|---:|---:|---:|---:|---:|")
for name in ("splice", "splice-noprefetch"):
    loops, waits = set(open(f"{tmp}/{name}-traced.loops").read().split()), {True: [], False: []}
    # A call's line, or its "<... sendfile resumed>" line when another thread's call came in between.
    for tid, s in re.findall(r"^(\d+) .*sendfile.*<([\d.]+)>$", open(f"{tmp}/{name}-traced.strace").read(), re.M):
        waits[tid in loops].append(float(s) * 1000)
    loop = waits[True]   # The issue's bound is 50 ms for a disk wait; 10 ms is a visible hiccup.
    print(f"| {label[name]} | {len(loop):,} | {max(loop, default=0):.1f} | {sum(d > 10 for d in loop)} | "
          f"{sum(d > 50 for d in loop)} | {max(waits[False], default=0):.1f} |")
EOF
  printf '\n## Servers\n\n```\n%s\n```\n' "$(<"$COMMANDS_FILE")"
} | tee "$RESULTS_DIR/coldfiles.md"
