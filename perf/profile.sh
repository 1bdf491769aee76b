#!/usr/bin/env bash
# perf/profile.sh — the cost map of a response: CPU, syscalls (and by name), context switches, pool work items and
# loop wake-ups per response, splice, sockets and nginx side by side (perf/README.md, "profile.sh"; ~10 minutes).
#   perf/profile.sh [--duration S] [--wait-quiet S] [--smoke]
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"

readonly SERVERS=(splice sockets nginx)
declare -A PORT=([splice]=18381 [sockets]=18382 [nginx]=18383)
# Scenarios: name, file, connections.
readonly SCENARIOS=("4KiB-c32 4KiB 32" "4KiB-c256 4KiB 256" "64KiB-c32 64KiB 32" "1MiB-c32 1MiB 32" "32MiB-c4 32MiB 4")
readonly FILES=(4KiB 64KiB 1MiB 32MiB)
declare -A FILE_SIZE=([4KiB]=4096 [64KiB]=65536 [1MiB]=1048576 [32MiB]=33554432)
readonly WRK_TIMEOUT=30s              # a 32 MiB download under strace takes seconds; wrk's 2 s default would count it as an error
readonly NGINX_WORKER_CONNECTIONS=1024   # wrk's 256 connections with room to spare
readonly STRACE_ATTACH_S=1            # strace attaches to each of a .NET server's ~20 threads before the run starts
readonly PAUSE_BETWEEN_PASSES_S=0.3   # lets the last ACKs and TIME_WAIT sockets drain between wrk runs
# lib.sh's warm-up with a shorter minimum (the JIT-count condition still holds back a server mid-tiering).
WARMUP_CAP_S=60
WARMUP_DOTNET_MIN_S=30

ARGS="$*"
DURATION_S=4 WAIT_QUIET_S=0
NAME=profile          # results/$NAME*; --smoke writes profile-smoke*, never the real ones
while (($#)); do
  case "$1" in
    --duration) DURATION_S=${2:?--duration needs seconds}; shift 2 ;;
    --wait-quiet) WAIT_QUIET_S=${2:?--wait-quiet needs seconds}; shift 2 ;;
    # Checks the script, not the servers: .NET is far from steady after a few seconds (the tables say so).
    --smoke) DURATION_S=1; WARMUP_WINDOW_S=1; WARMUP_CAP_S=3; WARMUP_DOTNET_MIN_S=0; NAME=profile-smoke; shift ;;
    -h|--help) usage 0 ;;
    *) usage ;;
  esac
done

start_server() {
  local name=$1 port=${PORT[$1]} cmd
  if [[ $name == nginx ]]; then
    cmd=$(nginx_server_command "$TMP_DIR/nginx" "$port" "$NGINX_WORKER_CONNECTIONS")
  else
    cmd=$(dotnet_server_command "$name" "$port")
  fi
  start_server_process "$name" "$cmd"
}

# Pass 2: strace -c -f over one wrk run; one row per syscall name into NAME-syscalls.csv.
strace_pass() {
  local name=$1 scenario=$2 out=$TMP_DIR/strace.txt pid wrk requests bytes sent
  local args=(strace -c -f -o "$out")
  for pid in $(server_pids "$name"); do args+=(-p "$pid"); done
  grep -qF "strace:" "$COMMANDS_FILE" || echo "strace: ${args[*]/#$out/FILE}" >>"$COMMANDS_FILE"
  start_probe "${args[@]}"
  sleep "$STRACE_ATTACH_S"
  wrk=$(run_wrk "$@" strace)
  stop_probe
  [[ -s $out ]] || { cat "$TMP_DIR/probe.err" >&2; die "strace wrote nothing for '$name' in $scenario"; }
  read -r requests bytes _ sent <<<"$wrk"
  echo "$name,$scenario,strace,$requests,$sent,$bytes,," >>"$SYSCALLS_CSV"
  # "% time seconds usecs/call calls [errors] syscall": the errors column is empty when there were none.
  awk -v name="$name" -v scenario="$scenario" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
    print name "," scenario "," $NF ",,,," $4 "," (NF == 6 ? $5 : 0) }' "$out" >>"$SYSCALLS_CSV"
  log "  $name strace: $requests responses ($sent sent)"
}

main() {
  begin_run profile
  CSV=$TMP_DIR/profile.csv SYSCALLS_CSV=$TMP_DIR/syscalls.csv WARMUP_CSV=$TMP_DIR/warmup.csv
  echo "$PLAIN_PASS_CSV_HEADER" >"$CSV"
  echo "server,scenario,syscall,requests,sent,bytes,calls,errors" >"$SYSCALLS_CSV"
  echo "$WARMUP_CSV_HEADER" >"$WARMUP_CSV"
  install_packages_for wrk=wrk nginx=nginx-light strace=strace perf=linux-perf curl=curl python3=python3
  raise_fd_limit 65536
  detect_hardware_counters
  build_sample
  make_files
  take_perf_lock
  wait_for_quiet
  local name line scenario file conns
  for name in "${SERVERS[@]}"; do log "starting $name on 127.0.0.1:${PORT[$name]}"; start_server "$name"; done
  for name in "${SERVERS[@]}"; do wait_for_port "$name"; check_server "$name"; done
  log "warming up each server (windows of ${WARMUP_WINDOW_S}s; .NET at least ${WARMUP_DOTNET_MIN_S}s, cap ${WARMUP_CAP_S}s)"
  for name in "${SERVERS[@]}"; do warm_up "$name"; done
  for line in "${SCENARIOS[@]}"; do
    read -r scenario file conns <<<"$line"
    taskset -c $CLIENT_CORE cat "$FILES_DIR/$file.bin" >/dev/null   # in the page cache for every server alike
    for name in "${SERVERS[@]}"; do
      log "$scenario: $name"
      plain_pass "$name" "$scenario" "$file" "$conns"; sleep "$PAUSE_BETWEEN_PASSES_S"
      strace_pass "$name" "$scenario" "$file" "$conns"; sleep "$PAUSE_BETWEEN_PASSES_S"
    done
  done
  {
    common_metadata
    printf '%s\n' "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')" "strace=$(strace -V | head -n1)" \
      "perf=$(perf --version)" "hardware_counters=$HW_COUNTERS" "duration_s=$DURATION_S"
    echo "warmup=$(awk -F, 'NR > 1 && $5 != "" {printf "%s%s %ss (%s)", sep, $1, $3, ($5 == "yes" ? "steady" : "at the cap"); sep = "; "}' "$WARMUP_CSV")"
  } >"$RESULTS_DIR/$NAME-meta.txt"
  rm -f "$RESULTS_DIR/$NAME-split.csv" "$RESULTS_DIR/$NAME-top.txt"   # an older profile.sh's, not this run's
  cp "$CSV" "$RESULTS_DIR/$NAME.csv"
  cp "$SYSCALLS_CSV" "$RESULTS_DIR/$NAME-syscalls.csv"
  cp "$WARMUP_CSV" "$RESULTS_DIR/$NAME-warmup.csv"
  cp "$COMMANDS_FILE" "$RESULTS_DIR/$NAME-commands.txt"
  python3 "$PERF_DIR/profile_report.py" --name "$NAME"
  log "done in $((SECONDS - STARTED))s: perf/results/$NAME.md"
}

main "$@"
