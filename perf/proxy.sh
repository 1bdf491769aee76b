#!/usr/bin/env bash
# perf/proxy.sh — what a TCP proxy costs, per GB and per small request (issue #12; the proxies: perf/README.md).
#   perf/proxy.sh [--rounds N] [--duration S]     results: perf/results/proxy.md
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"
FILES_DIR=$CACHE_DIR/proxy
SAMPLE_PROJECT=$REPO_DIR/samples/TcpProxy
SAMPLE_BUILD_DIR=$SAMPLE_PROJECT/bin/Release/net10.0
SAMPLE_BIN=$SAMPLE_COPY_DIR/TcpProxy

readonly PROXIES=(tcpproxy-splice tcpproxy-sockets haproxy-splice haproxy-copy go)
declare -A PORT=([tcpproxy-splice]=18281 [tcpproxy-sockets]=18282 [haproxy-splice]=18283 [haproxy-copy]=18284
                 [go]=18285 [upstream]=18290)
FILES=(large small)
declare -A FILE_SIZE=([large]=$((256 * 1024 * 1024)) [small]=4096) CONNECTIONS=([large]=4 [small]=64)
readonly DOTNET_WARMUP_S=30           # a .NET server pinned to one core needs ~30 s of load to reach steady speed
readonly UPSTREAM_CONNECTIONS=4096    # nginx's worker_connections: one per proxied connection, with room
ROUNDS=2 DURATION_S=8                 # the defaults of --rounds and --duration

# Starts a proxy (one thread, on SERVER_CORE), or the upstream (on the clients' core), and waits until it answers.
start() {
  local name=$1 port=${PORT[$1]} listen=127.0.0.1:${PORT[$1]} upstream=127.0.0.1:${PORT[upstream]} cmd
  case "$name" in
    upstream) cmd=$(SERVER_CORE=$CLIENT_CORE nginx_server_command "$TMP_DIR/nginx" "$port" "$UPSTREAM_CONNECTIONS") ;;
    tcpproxy-*) cmd="env DOTNET_gcServer=0 taskset -c $SERVER_CORE $SAMPLE_BIN --listen $listen --upstream $upstream"
      cmd+=" --transport ${name#tcpproxy-} --Logging:LogLevel:TcpProxy=Warning" ;;
    haproxy-*) cat >"$TMP_DIR/$name.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    tune.pipesize 1048576
listen proxy
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    bind $listen
$([[ $name == haproxy-splice ]] && printf '    option splice-%s\n' request response)
    server upstream $upstream
EOF
      cmd="taskset -c $SERVER_CORE haproxy -db -f $TMP_DIR/$name.cfg" ;;
    go) cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/gopeer proxy -listen $listen -upstream $upstream" ;;
  esac
  start_server_process "$name" "$cmd"
  wait_for_port "$name"
}

parse_options "--rounds --duration" "$@"
begin_run proxy
raise_fd_limit 65536   # two fds per proxied connection, plus HAProxy's for its maxconn
install_packages_for wrk=wrk nginx=nginx-light haproxy=haproxy go=golang-go curl=curl
make_files
build_sample
build_gopeer
for name in upstream "${PROXIES[@]}"; do start "$name"; done
warm_for "$DOTNET_WARMUP_S" "${CONNECTIONS[small]}" small.bin tcpproxy-splice tcpproxy-sockets
declare -A r
for ((round = 1; round <= ROUNDS; round++)); do
  for name in "${PROXIES[@]}"; do
    for file in large small; do
      ticks=$(server_cpu_ticks "$name")
      # --timeout: a 256 MiB response through a slow proxy takes seconds; wrk counts one over 2 s as an error.
      wrk_result r "$name" "${CONNECTIONS[$file]}" "$file.bin" --timeout 30s
      ticks=$(($(server_cpu_ticks "$name") - ticks))
      echo "$name,$file,${r[requests]},${r[bytes]},${r[duration_us]},${r[p99_us]},${r[errors]},$ticks" >>"$TMP_DIR/csv"
      log "$name round $round, $file: ${r[requests]} responses, $ticks ticks, p99 ${r[p99_us]} us, ${r[errors]} errors"
    done
  done
done

{
  cat <<EOF
# TCP proxies side by side

- Measured: \`src/\`, \`samples/TcpProxy\` as of commit $(git -C "$REPO_DIR" log -1 --format=%h -- src samples/TcpProxy); \`perf/proxy.sh --rounds $ROUNDS --duration $DURATION_S\`
- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; other work may have run)
- Every proxy pinned to core 0 (one thread), nginx upstream and wrk on core 1. Large: wrk -t1 -c4 on a 256 MiB file; small: wrk -t1 -c64 on a 4 KiB file.
- Cells: median over rounds (min–max). CPU s/GB: the proxy's utime+stime per GB through it.

| proxy | CPU s/GB | ÷ HAProxy splice | ÷ TcpProxy sockets | GB/s | small req/s | small p99 ms | errors |
|---|---|---|---|---|---|---|---|
EOF
  PYTHONPATH=$PERF_DIR python3 - "$TMP_DIR/csv" <<'EOF'
import csv, os, statistics as st, sys
from tables import cell, quotient, row, two
v, hz = {}, os.sysconf("SC_CLK_TCK")   # v[proxy, file, column]: a value per round
for name, file, *fields in csv.reader(open(sys.argv[1])):
    n, b, us, p99, errors, ticks = map(int, fields)
    got = {"cpu": ticks / hz / (b / 1e9), "gbps": b / us / 1e3, "rps": n * 1e6 / us, "p99": p99 / 1e3, "errors": errors}
    for key, value in got.items():
        v.setdefault((name, file, key), []).append(value)
for name, label in {"tcpproxy-splice": "TcpProxy on SpliceTransport (ForwardAsync, splice-auto)",
                    "tcpproxy-sockets": "TcpProxy on Kestrel sockets", "haproxy-splice": "HAProxy, splice",
                    "haproxy-copy": "HAProxy, no splice", "go": "Go io.Copy (splices TCPConn to TCPConn)"}.items():
    cpu = [st.median(v[n, "large", "cpu"]) for n in (name, "haproxy-splice", "tcpproxy-sockets")]
    print(row([label, cell(v[name, "large", "cpu"], "{:.3f}".format), quotient(*cpu[:2]), quotient(cpu[0], cpu[2]),
               cell(v[name, "large", "gbps"], two), f"{st.median(v[name, 'small', 'rps']):,.0f}",
               two(st.median(v[name, "small", "p99"])), sum(v[name, "large", "errors"] + v[name, "small", "errors"])]))
EOF
  printf '\n## Commands\n\n```\n%s\n```\n' "$(<"$COMMANDS_FILE")"
} >"$RESULTS_DIR/proxy.md"
