#!/usr/bin/env bash
# perf/proxy.sh — what a TCP proxy costs (issue #12): CPU per GB through it, and small requests through it.
#
# An nginx upstream serves a 256 MiB file and a 4 KiB one; in front of it, side by side in one run:
#   tcpproxy-splice   samples/TcpProxy on SpliceTransport (ForwardAsync: splice-auto on the loop)
#   tcpproxy-sockets  samples/TcpProxy on Kestrel's socket transport (ForwardAsync copies through the pipes)
#   haproxy-splice    HAProxy, mode tcp, option splice-request/splice-response, tune.pipesize 1048576
#   haproxy-copy      HAProxy, mode tcp, no splice
#   go                perf/goproxy: io.Copy between *net.TCPConn (Go splices TCPConn to TCPConn)
# Every proxy runs on core 0 (one thread, one loop); nginx and wrk on core 1. Per proxy and round:
#   large: wrk -t1 -c4 on the 256 MiB file: proxy CPU seconds per GB (utime+stime from /proc/PID/stat)
#   small: wrk -t1 -c64 on the 4 KiB file: requests/s and p99
# The .NET proxies are warmed first (a .NET server pinned to one core needs ~30 s of load to reach steady speed).
#
#   perf/proxy.sh [--rounds N] [--duration S]     results: perf/results/proxy.md
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
REPO_DIR=$(dirname "$PERF_DIR")
CACHE_DIR=$PERF_DIR/.cache
FILES_DIR=$CACHE_DIR/proxy
SAMPLE_COPY_DIR=$CACHE_DIR/proxy-sample
BIN_DIR=$CACHE_DIR/bin
RESULTS=$PERF_DIR/results/proxy.md

readonly PROXY_CORE=0
readonly CLIENT_CORE=1
readonly PROXIES=(tcpproxy-splice tcpproxy-sockets haproxy-splice haproxy-copy go)
declare -A PORT=([tcpproxy-splice]=18281 [tcpproxy-sockets]=18282 [haproxy-splice]=18283 [haproxy-copy]=18284 [go]=18285)
readonly UPSTREAM_PORT=18290
readonly STOP_TIMEOUT_S=5
readonly LARGE_SIZE=$((256 * 1024 * 1024))
readonly SMALL_SIZE=4096
readonly LARGE_CONNECTIONS=4
readonly SMALL_CONNECTIONS=64
readonly DOTNET_WARMUP_S=30
readonly CLOCK_TICKS=$(getconf CLK_TCK)
# For lib.sh's write_nginx_config: the upstream serves 64 small and 4 large connections, one per proxied one.
readonly UPSTREAM_WORKER_CONNECTIONS=4096
readonly FD_LIMIT=65536
readonly PLAINTEXT_BODY="Hello, World!"

ROUNDS=2
DURATION_S=8
while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION_S=$2; shift 2 ;;
    *) echo "usage: perf/proxy.sh [--rounds N] [--duration S]" >&2; exit 2 ;;
  esac
done


TMP_DIR=$(mktemp -d /tmp/splice-proxy.XXXXXX)
declare -A SERVER_PID=()
cleanup() {
  local name
  for name in "${!SERVER_PID[@]}"; do stop_pid "${SERVER_PID[$name]}"; done
  rm -rf "$TMP_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_tools() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v go >/dev/null || need+=(golang-go)
  ((${#need[@]} == 0)) && return
  log "installing ${need[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

prepare() {
  mkdir -p "$FILES_DIR" "$BIN_DIR"
  [[ -f $FILES_DIR/large.bin && $(stat -c %s "$FILES_DIR/large.bin") == "$LARGE_SIZE" ]] ||
    head -c "$LARGE_SIZE" /dev/urandom >"$FILES_DIR/large.bin"
  [[ -f $FILES_DIR/small.bin && $(stat -c %s "$FILES_DIR/small.bin") == "$SMALL_SIZE" ]] ||
    head -c "$SMALL_SIZE" /dev/urandom >"$FILES_DIR/small.bin"
  log "building samples/TcpProxy (Release) and perf/goproxy"
  dotnet publish "$REPO_DIR/samples/TcpProxy" -c Release -o "$SAMPLE_COPY_DIR" --nologo -v q >/dev/null
  (cd "$PERF_DIR/goproxy" && GOCACHE=$CACHE_DIR/go-build GOPATH=$CACHE_DIR/gopath GOTOOLCHAIN=local GOFLAGS= \
    go build -o "$BIN_DIR/goproxy" .) || die "go build of perf/goproxy failed"
}

start() {
  local name=$1 cmd log_file=$TMP_DIR/$1.log
  case "$name" in
    upstream)
      write_nginx_config "$TMP_DIR/nginx" "$UPSTREAM_PORT" "$UPSTREAM_WORKER_CONNECTIONS"
      cmd="taskset -c $CLIENT_CORE nginx -p $TMP_DIR/nginx -c $TMP_DIR/nginx/nginx.conf -e $TMP_DIR/nginx/error.log -g 'daemon off;'" ;;
    tcpproxy-splice|tcpproxy-sockets)
      cmd="env DOTNET_gcServer=0 taskset -c $PROXY_CORE $SAMPLE_COPY_DIR/TcpProxy --listen 127.0.0.1:${PORT[$name]} --upstream 127.0.0.1:$UPSTREAM_PORT --transport ${name#tcpproxy-} --Logging:LogLevel:TcpProxy=Warning" ;;
    haproxy-splice|haproxy-copy)
      local splice=""
      [[ $name == haproxy-splice ]] && splice=$'    option splice-request\n    option splice-response'
      cat >"$TMP_DIR/$name.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    tune.pipesize 1048576
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
listen proxy
    bind 127.0.0.1:${PORT[$name]}
$splice
    server upstream 127.0.0.1:$UPSTREAM_PORT
EOF
      cmd="taskset -c $PROXY_CORE haproxy -db -f $TMP_DIR/$name.cfg" ;;
    go)
      cmd="env GOMAXPROCS=1 taskset -c $PROXY_CORE $BIN_DIR/goproxy -listen 127.0.0.1:${PORT[$name]} -upstream 127.0.0.1:$UPSTREAM_PORT" ;;
  esac
  echo "$name: $cmd" >>"$TMP_DIR/commands.txt"
  eval "exec $cmd" >"$log_file" 2>&1 &
  SERVER_PID[$name]=$!
  local port=${PORT[$name]:-$UPSTREAM_PORT} deadline=$((SECONDS + 30))
  until curl -sf -o /dev/null "http://127.0.0.1:$port/small.bin"; do
    ((SECONDS < deadline)) && kill -0 "${SERVER_PID[$name]}" 2>/dev/null || { cat "$log_file" >&2; die "$name did not start"; }
    sleep 0.2
  done
}

# One wrk run through a proxy; echoes "requests bytes duration_us p99_us errors".
wrk_run() {
  local port=$1 connections=$2 file=$3 out=$TMP_DIR/wrk.out
  # --timeout: a 256 MiB response through a slow proxy takes seconds; wrk counts one over 2 s as an error.
  taskset -c $CLIENT_CORE wrk -t1 -c"$connections" -d"${DURATION_S}s" --timeout 30s --latency -s "$PERF_DIR/report.lua" \
    "http://127.0.0.1:$port/$file" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed"; }
  declare -A r=(); read_wrk_result "$out" r "wrk on port $port"
  echo "${r[requests]} ${r[bytes]} ${r[duration_us]} ${r[p99_us]} $((r[connect] + r[read] + r[write] + r[status] + r[timeout]))"
}

measure() {
  local name=$1 round=$2 port=${PORT[$1]} before after requests bytes duration p99 errors
  before=$(server_cpu_ticks "$name")
  read -r requests bytes duration p99 errors < <(wrk_run "$port" $LARGE_CONNECTIONS large.bin)
  after=$(server_cpu_ticks "$name")
  local cpu_per_gb
  cpu_per_gb=$(awk -v t=$((after - before)) -v hz="$CLOCK_TICKS" -v b="$bytes" 'BEGIN {printf "%.3f", (t / hz) / (b / 1e9)}')
  local gbps; gbps=$(awk -v b="$bytes" -v d="$duration" 'BEGIN {printf "%.2f", b / d / 1e3}')
  echo "$round,$name,large,$requests,$bytes,$duration,$p99,$errors,$cpu_per_gb,$gbps" >>"$TMP_DIR/results.csv"
  log "$name round $round: large $cpu_per_gb CPU s/GB, $gbps GB/s, errors $errors"
  read -r requests bytes duration p99 errors < <(wrk_run "$port" $SMALL_CONNECTIONS small.bin)
  local rps=$((requests * 1000000 / duration))
  echo "$round,$name,small,$requests,$bytes,$duration,$p99,$errors,," >>"$TMP_DIR/results.csv"
  log "$name round $round: small $rps req/s, p99 $((p99 / 1000)) ms, errors $errors"
}

report() {
  local commit load
  commit=$(git -C "$REPO_DIR" log -1 --format='%h' -- src samples/TcpProxy)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  python3 - "$TMP_DIR/results.csv" "$RESULTS" "$commit" "$load" "$ROUNDS" "$DURATION_S" "$TMP_DIR/commands.txt" <<'EOF'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
out, commit, load, rounds, duration, commands = sys.argv[2:8]
order = ["tcpproxy-splice", "tcpproxy-sockets", "haproxy-splice", "haproxy-copy", "go"]
label = {"tcpproxy-splice": "TcpProxy on SpliceTransport (ForwardAsync, splice-auto)", "tcpproxy-sockets": "TcpProxy on Kestrel sockets",
         "haproxy-splice": "HAProxy, splice", "haproxy-copy": "HAProxy, no splice", "go": "Go io.Copy (splices TCPConn to TCPConn)"}
def med(name, kind, col):
    vals = [float(r[col]) for r in rows if r[1] == name and r[2] == kind]
    return statistics.median(vals), min(vals), max(vals)
def cell(v, fmt):
    m, lo, hi = v
    return fmt.format(m) if lo == hi else f"{fmt.format(m)} ({fmt.format(lo)}–{fmt.format(hi)})"
base_cpu = med("haproxy-splice", "large", 8)[0]
sock_cpu = med("tcpproxy-sockets", "large", 8)[0]
base_rps = None
with open(out, "w") as o:
    o.write("# TCP proxies side by side\n\n")
    o.write(f"- Measured: `src/`, `samples/TcpProxy` as of commit {commit}; `perf/proxy.sh --rounds {rounds} --duration {duration}`\n")
    o.write(f"- Load average at the end: {load} (the machine is shared; other work may have run)\n")
    o.write("- Every proxy pinned to core 0 (one thread), nginx upstream and wrk on core 1. Large: wrk -t1 -c4 on a 256 MiB file; small: wrk -t1 -c64 on a 4 KiB file.\n")
    o.write("- Cells: median over rounds (min–max). CPU s/GB: the proxy's utime+stime per GB through it.\n\n")
    o.write("| proxy | CPU s/GB | ÷ HAProxy splice | ÷ TcpProxy sockets | GB/s | small req/s | small p99 ms | errors |\n|---|---|---|---|---|---|---|---|\n")
    for name in order:
        if not any(r[1] == name for r in rows):
            continue
        cpu = med(name, "large", 8)
        gbps = med(name, "large", 9)
        small = [r for r in rows if r[1] == name and r[2] == "small"]
        rps = statistics.median(int(r[3]) * 1e6 / int(r[5]) for r in small)
        p99 = statistics.median(int(r[6]) / 1000 for r in small)
        errors = sum(int(r[7]) for r in rows if r[1] == name)
        o.write(f"| {label[name]} | {cell(cpu, '{:.3f}')} | {cpu[0] / base_cpu:.2f}× | {cpu[0] / sock_cpu:.2f}× | {cell(gbps, '{:.2f}')} | {rps:,.0f} | {p99:.2f} | {errors} |\n")
    o.write("\n## Commands\n\n```\n" + open(commands).read() + "```\n")
EOF
  log "wrote $RESULTS"
}

main() {
  # 64 small connections through each proxy, two descriptors per proxied connection, plus HAProxy's own
  # reservation for its maxconn: the default soft limit of 1024 is too low for HAProxy to start.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  install_tools
  prepare
  : >"$TMP_DIR/results.csv"
  start upstream
  local name round
  for name in "${PROXIES[@]}"; do start "$name"; done
  for name in tcpproxy-splice tcpproxy-sockets; do
    log "warming $name for ${DOTNET_WARMUP_S}s"
    taskset -c $CLIENT_CORE wrk -t1 -c$SMALL_CONNECTIONS -d${DOTNET_WARMUP_S}s "http://127.0.0.1:${PORT[$name]}/small.bin" >/dev/null
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for name in "${PROXIES[@]}"; do measure "$name" "$round"; done
  done
  report
}

main
