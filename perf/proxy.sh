#!/usr/bin/env bash
# perf/proxy.sh — what a TCP proxy costs (issue #12): CPU per GB through it, and small requests through it.
#
#   perf/proxy.sh [--rounds N] [--duration S]     results: perf/results/proxy.md
#
# An nginx upstream serves a 256 MiB file and a 4 KiB one; in front of it, side by side in one run:
#   tcpproxy-splice   samples/TcpProxy on SpliceTransport (ForwardAsync: splice-auto on the loop)
#   tcpproxy-sockets  samples/TcpProxy on Kestrel's socket transport (ForwardAsync copies through the pipes)
#   haproxy-splice    HAProxy, mode tcp, option splice-request/splice-response, tune.pipesize 1048576
#   haproxy-copy      HAProxy, mode tcp, no splice
#   go                perf/gopeer proxy: io.Copy between *net.TCPConn (Go splices TCPConn to TCPConn)
# Every proxy runs on core 0 (one thread, one loop); nginx and wrk on core 1. Per proxy and round, wrk -t1 -c4
# on the 256 MiB file (proxy CPU seconds per GB, from /proc) and wrk -t1 -c64 on the 4 KiB file (requests/s, p99).
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
FILES_DIR=$CACHE_DIR/proxy
SAMPLE_PROJECT=$REPO_DIR/samples/TcpProxy
SAMPLE_BUILD_DIR=$SAMPLE_PROJECT/bin/Release/net10.0
SAMPLE_BIN=$SAMPLE_COPY_DIR/TcpProxy

readonly PROXIES=(tcpproxy-splice tcpproxy-sockets haproxy-splice haproxy-copy go)
declare -A PORT=([tcpproxy-splice]=18281 [tcpproxy-sockets]=18282 [haproxy-splice]=18283 [haproxy-copy]=18284 [go]=18285
                 [upstream]=18290)
FILES=(large small)
declare -A FILE_SIZE=([large]=$((256 * 1024 * 1024)) [small]=4096) CONNECTIONS=([large]=4 [small]=64)
readonly DOTNET_WARMUP_S=30           # a .NET server pinned to one core needs ~30 s of load to reach steady speed
readonly UPSTREAM_CONNECTIONS=4096    # nginx's worker_connections: one per proxied connection, with room
readonly WANTED_FD_LIMIT=65536        # two descriptors per proxied connection, plus HAProxy's for its maxconn
ROUNDS=2
DURATION_S=8

write_haproxy_config() {
  cat >"$TMP_DIR/$1.cfg" <<EOF
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
    bind 127.0.0.1:${PORT[$1]}
$([[ $1 == haproxy-splice ]] && printf '    option splice-request\n    option splice-response')
    server upstream 127.0.0.1:${PORT[upstream]}
EOF
}

# Starts a proxy, or the upstream (on the clients' core), and waits until it answers.
start() {
  local name=$1 listen=127.0.0.1:${PORT[$1]} upstream=127.0.0.1:${PORT[upstream]} cmd
  case "$name" in
    upstream) cmd=$(SERVER_CORE=$CLIENT_CORE nginx_server_command "$TMP_DIR/nginx" "${PORT[upstream]}" "$UPSTREAM_CONNECTIONS") ;;
    tcpproxy-*) cmd="env DOTNET_gcServer=0 taskset -c $SERVER_CORE $SAMPLE_BIN --listen $listen --upstream $upstream --transport ${name#tcpproxy-} --Logging:LogLevel:TcpProxy=Warning" ;;
    haproxy-*) write_haproxy_config "$name"; cmd="taskset -c $SERVER_CORE haproxy -db -f $TMP_DIR/$name.cfg" ;;
    go) cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/gopeer proxy -listen $listen -upstream $upstream" ;;
  esac
  start_server_process "$name" "$cmd"
  wait_for_port "$name"
}

# One round of one proxy, a CSV row per file: round,proxy,file,requests,bytes,duration_us,p99_us,errors,cpu_ticks.
measure() {
  local name=$1 round=$2 file ticks
  for file in large small; do
    local -A r=()
    ticks=$(server_cpu_ticks "$name")
    # --timeout: a 256 MiB response through a slow proxy takes seconds; wrk counts one over 2 s as an error.
    wrk_result r "$name" "${CONNECTIONS[$file]}" "$file.bin" --timeout 30s
    ticks=$(($(server_cpu_ticks "$name") - ticks))
    echo "$round,$name,$file,${r[requests]},${r[bytes]},${r[duration_us]},${r[p99_us]},${r[errors]},$ticks" >>"$TMP_DIR/results.csv"
    log "$name round $round, $file: ${r[requests]} responses, ${r[bytes]} bytes, $ticks CPU ticks, p99 ${r[p99_us]} us, ${r[errors]} errors"
  done
}

write_report() {
  cat <<EOF
# TCP proxies side by side

- Measured: \`src/\`, \`samples/TcpProxy\` as of commit $(git -C "$REPO_DIR" log -1 --format=%h -- src samples/TcpProxy); \`perf/proxy.sh --rounds $ROUNDS --duration $DURATION_S\`
- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; other work may have run)
- Every proxy pinned to core 0 (one thread), nginx upstream and wrk on core 1. Large: wrk -t1 -c4 on a 256 MiB file; small: wrk -t1 -c64 on a 4 KiB file.
- Cells: median over rounds (min–max). CPU s/GB: the proxy's utime+stime per GB through it.

| proxy | CPU s/GB | ÷ HAProxy splice | ÷ TcpProxy sockets | GB/s | small req/s | small p99 ms | errors |
|---|---|---|---|---|---|---|---|
EOF
  PYTHONPATH=$PERF_DIR python3 - "$TMP_DIR/results.csv" <<'EOF'
import csv, os, statistics as st, sys
from tables import cell
runs, hz = {}, os.sysconf("SC_CLK_TCK")
for _, name, file, requests, nbytes, us, p99, errors, ticks in csv.reader(open(sys.argv[1])):
    runs.setdefault((name, file), []).append({"cpu": int(ticks) / hz / (int(nbytes) / 1e9), "gbps": int(nbytes) / int(us) / 1e3,
                                              "rps": int(requests) * 1e6 / int(us), "p99": int(p99) / 1000, "errors": int(errors)})
def vals(name, file, key): return [run[key] for run in runs[name, file]]
base, sockets = st.median(vals("haproxy-splice", "large", "cpu")), st.median(vals("tcpproxy-sockets", "large", "cpu"))
for name, label in {"tcpproxy-splice": "TcpProxy on SpliceTransport (ForwardAsync, splice-auto)", "tcpproxy-sockets": "TcpProxy on Kestrel sockets",
                    "haproxy-splice": "HAProxy, splice", "haproxy-copy": "HAProxy, no splice", "go": "Go io.Copy (splices TCPConn to TCPConn)"}.items():
    cpu = vals(name, "large", "cpu")
    print(f"| {label} | {cell(cpu, '{:.3f}'.format)} | {st.median(cpu) / base:.2f}× | {st.median(cpu) / sockets:.2f}× | {cell(vals(name, 'large', 'gbps'), '{:.2f}'.format)} | "
          f"{st.median(vals(name, 'small', 'rps')):,.0f} | {st.median(vals(name, 'small', 'p99')):.2f} | {sum(vals(name, 'large', 'errors') + vals(name, 'small', 'errors'))} |")
EOF
  printf '\n## Commands\n\n```\n%s\n```\n' "$(<"$COMMANDS_FILE")"
}

main() {
  parse_options "--rounds --duration" "$@"
  begin_run proxy
  ulimit -n "$WANTED_FD_LIMIT" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  FD_LIMIT=$(ulimit -n)
  install_packages_for wrk=wrk nginx=nginx-light haproxy=haproxy go=golang-go curl=curl
  make_files
  build_sample
  build_gopeer
  start upstream
  local name round
  for name in "${PROXIES[@]}"; do start "$name"; done
  warm_for "$DOTNET_WARMUP_S" "${CONNECTIONS[small]}" small.bin tcpproxy-splice tcpproxy-sockets
  for ((round = 1; round <= ROUNDS; round++)); do
    for name in "${PROXIES[@]}"; do measure "$name" "$round"; done
  done
  write_report >"$RESULTS_DIR/proxy.md"
  log "wrote perf/results/proxy.md"
}

main "$@"
