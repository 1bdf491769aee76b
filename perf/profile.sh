#!/usr/bin/env bash
# perf/profile.sh — the cost map of a response (issues #10 and #13): per response, for splice, sockets and nginx
# side by side, syscalls by name, context switches, thread-pool work items, loop wake-ups and CPU, and for
# 4 KiB whose code the CPU time goes to; plus #10's two scheduling candidates as extra rows.
#
#   perf/profile.sh                  about 10 minutes; measures holding /work/perf.lock
#   perf/profile.sh --duration S     seconds of wrk per pass (default 4)
#   perf/profile.sh --wait-quiet 300 first wait (up to 300 s) until others' work leaves the machine 90% idle
#   perf/profile.sh --smoke          about 3 minutes, 1 s passes, 3 s warm-up: checks the script (results/profile-smoke*)
#
# Writes perf/results/profile.md (tables; everything below its "reading" marker is kept from the last one) and
# the raw figures next to it: profile.csv, profile-syscalls.csv, profile-split.csv, profile-top.txt,
# profile-meta.txt, profile-commands.txt. `python3 perf/profile_report.py` redraws profile.md from them alone.
#
# Servers, all pinned to core 0 (clients on core 1) and warmed as perf/run.sh does (perf/lib.sh):
#   splice          the sample, --transport splice          } DOTNET_gcServer=0; DOTNET_PerfMapEnabled=1 and
#   sockets         the sample, --transport sockets         }   DOTNET_EnableWriteXorExecute=0 (see PERF_MAP_ENV)
#   nginx           one worker, sendfile on, tcp_nopush on, access_log off
#   splice-spin0    splice with DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0       } #10's candidates, only in
#   splice-inline   splice with --SpliceTransport:ApplicationSchedulingMode=Inline } the 4 KiB/256 and 32 MiB cases
#
# Every cell (server x scenario) is measured in three passes of one wrk run each, and every figure is divided
# by the requests wrk sent in that same pass (perf/counted.lua: the server handled the last one on each
# connection too, though wrk stopped before counting its response); for 1 MiB and 32 MiB by the bytes wrk read
# over the file's size, since a few downloads are still running when wrk stops:
#   1. plain:  perf stat -p (task-clock, context switches, all syscall entries, epoll_wait returns, cachestat calls; instructions
#              and cycles where the VM has hardware counters), /proc/PID/task/*/status context switches, and the
#              sample's GET /perf/threadpool (ThreadPool.CompletedWorkItemCount) before and after;
#   2. strace: strace -c -f attached over the run: calls per response by syscall name (strace slows the server
#              several times over, so its requests/s mean nothing; the counts per response are what matter);
#   3. record: 4 KiB only, perf record -e cpu-clock, the samples split by whose code they fell in.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"

readonly SERVERS=(splice sockets nginx splice-spin0 splice-inline)
declare -A PORT=([splice]=18381 [sockets]=18382 [nginx]=18383 [splice-spin0]=18384 [splice-inline]=18385)
declare -A SERVER_TRANSPORT=([splice]=splice [sockets]=sockets [splice-spin0]=splice [splice-inline]=splice)
# So that perf report can name JIT-compiled code (and put it in the right bucket): the runtime writes
# /tmp/perf-PID.map, and W^X is off because perf 6.1 does not look up that map for code it sees in the
# runtime's double-mapped memfd ("memfd:doublemapper"), only in anonymous memory. W^X costs at JIT time, not
# in steady state; perf/run.sh's servers keep it on.
readonly PERF_MAP_ENV="DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0"
declare -A SERVER_ENV=([splice]="$PERF_MAP_ENV" [sockets]="$PERF_MAP_ENV"
                       [splice-spin0]="$PERF_MAP_ENV DOTNET_ThreadPool_UnfairSemaphoreSpinLimit=0"
                       [splice-inline]="$PERF_MAP_ENV")
declare -A SERVER_ARGS=([splice-inline]="--SpliceTransport:ApplicationSchedulingMode=Inline")
readonly BASE_SERVERS="splice sockets nginx"
readonly ALL_SERVERS="${SERVERS[*]}"

# Scenarios: name, file, connections, servers, whether to perf record. 32 connections as perf/run.sh's lower
# count; 256 for 4 KiB, where #13's target and #10's inline candidate are; 4 connections on 32 MiB as #10's CPU
# per GB measurement.
readonly SCENARIOS=(
  "4KiB-c32    4KiB   32  base record"
  "4KiB-c256   4KiB  256  all  record"
  "64KiB-c32   64KiB  32  base -"
  "1MiB-c32    1MiB   32  base -"
  "32MiB-c4    32MiB   4  all  -"
)
readonly FILES=(4KiB 64KiB 1MiB 32MiB)
declare -A FILE_SIZE=([4KiB]=4096 [64KiB]=65536 [1MiB]=1048576 [32MiB]=33554432)

readonly WRK_TIMEOUT=30s              # a 32 MiB download under strace takes seconds; wrk's 2 s default would count it as an error
readonly NGINX_WORKER_CONNECTIONS=1024   # wrk's 256 connections with room to spare
readonly STRACE_ATTACH_S=1            # strace attaches to each of a .NET server's ~20 threads before the run starts
readonly RECORD_FREQUENCY_HZ=2000     # perf record samples per second of CPU: ~8,000 in a 4 s run of one busy core
readonly PAUSE_BETWEEN_PASSES_S=0.3   # lets the last ACKs and TIME_WAIT sockets drain between wrk runs
# lib.sh's warm-up with a shorter minimum (the JIT-count condition still holds back a server mid-tiering).
WARMUP_CAP_S=60
WARMUP_DOTNET_MIN_S=30

ARGS="$*"             # as given, for the results (the loop below consumes them)
DURATION_S=4
NAME=profile          # results/$NAME.md and $NAME*.{csv,txt}; --smoke writes profile-smoke, never the real ones
WAIT_QUIET_S=0        # --wait-quiet: how long to wait for others' work to leave the machine 90% idle (0: don't)
while (($#)); do
  case "$1" in
    --duration) DURATION_S=${2:?--duration needs seconds}; shift 2 ;;
    --wait-quiet) WAIT_QUIET_S=${2:?--wait-quiet needs seconds}; shift 2 ;;
    # Checks the script, not the servers: .NET is far from steady after a few seconds (the tables say so).
    --smoke) DURATION_S=1; WARMUP_WINDOW_S=1; WARMUP_CAP_S=3; WARMUP_DOTNET_MIN_S=0; NAME=profile-smoke; shift ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "perf/profile.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

FD_LIMIT=""
CSV=""; SYSCALLS_CSV=""; SPLIT_CSV=""; TOP_TXT=""; WARMUP_CSV=""

start_server() {
  local name=$1 port=${PORT[$1]} cmd
  if [[ $name == nginx ]]; then
    cmd=$(nginx_server_command "$TMP_DIR/nginx" "$port" "$NGINX_WORKER_CONNECTIONS")
  else
    cmd=$(dotnet_server_command "${SERVER_TRANSPORT[$name]}" "$port" "${SERVER_ENV[$name]:-}" "${SERVER_ARGS[$name]:-}")
  fi
  start_server_process "$name" "$cmd"
}

# Pass 2: strace -c -f over one wrk run; one row per syscall name into profile-syscalls.csv.
strace_pass() {
  local name=$1 scenario=$2 file=$3 conns=$4 out=$TMP_DIR/strace.txt pid wrk
  local args=(strace -c -f -o "$out")
  for pid in $(server_pids "$name"); do args+=(-p "$pid"); done
  grep -qF "strace:" "$COMMANDS_FILE" || echo "strace: ${args[*]/#$out/FILE}" >>"$COMMANDS_FILE"
  start_probe "${args[@]}"
  sleep "$STRACE_ATTACH_S"
  wrk=$(run_wrk "$name" "$scenario" "$file" "$conns" strace)
  stop_probe
  [[ -s $out ]] || { cat "$TMP_DIR/probe.err" >&2; die "strace wrote nothing for '$name' in $scenario"; }
  read -r requests bytes _ sent <<<"$wrk"
  echo "$name,$scenario,strace,$requests,$sent,$bytes,," >>"$SYSCALLS_CSV"
  # "% time seconds usecs/call calls [errors] syscall": the errors column is empty when there were none.
  awk -v name="$name" -v scenario="$scenario" -v n="$requests" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { errors = (NF == 6 ? $5 : 0); print name "," scenario "," $NF ",,,," $4 "," errors }
  ' "$out" >>"$SYSCALLS_CSV"
  log "  $name strace: $requests responses ($sent sent)"
}

# Pass 3: perf record of cpu-clock, split by whose code each sample fell in (perf/profile_report.py classifies).
record_pass() {
  local name=$1 scenario=$2 file=$3 conns=$4 data=$TMP_DIR/perf.data report=$TMP_DIR/perf-report.txt wrk
  local args=(perf record -e cpu-clock -F "$RECORD_FREQUENCY_HZ" -o "$data" -p "$(attach_pids "$name")")
  grep -qF "record:" "$COMMANDS_FILE" || echo "record: ${args[*]/#$data/FILE}; perf report -i FILE --stdio --no-children --sort dso,sym -F sample,dso,sym -g none --percent-limit 0" >>"$COMMANDS_FILE"
  start_probe "${args[@]}"
  wrk=$(run_wrk "$name" "$scenario" "$file" "$conns" record)
  stop_probe
  read -r requests _ _ sent <<<"$wrk"
  taskset -c $CLIENT_CORE perf report -i "$data" --stdio --no-children --sort dso,sym -F sample,dso,sym -g none \
    --percent-limit 0 2>/dev/null >"$report" || die "perf report failed for '$name' in $scenario"
  python3 "$PERF_DIR/profile_report.py" --classify "$name" "$scenario" "$sent" "$report" "$SPLIT_CSV" "$TOP_TXT"
  rm -f "$data" "$data.old"
  log "  $name record: $requests responses ($sent sent)"
}

measure_cell() {
  local name=$1 scenario=$2 file=$3 conns=$4 record=$5
  log "$scenario: $name"
  plain_pass "$name" "$scenario" "$file" "$conns"; sleep "$PAUSE_BETWEEN_PASSES_S"
  strace_pass "$name" "$scenario" "$file" "$conns"; sleep "$PAUSE_BETWEEN_PASSES_S"
  if [[ $record == record ]]; then record_pass "$name" "$scenario" "$file" "$conns"; sleep "$PAUSE_BETWEEN_PASSES_S"; fi
}

write_metadata() {
  {
    common_metadata
    printf '%s\n' "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')" "strace=$(strace -V | head -n1)" \
      "perf=$(perf --version)" "hardware_counters=$HW_COUNTERS" "commit=$BUILD_COMMIT" "src_commit=$SRC_COMMIT" \
      "duration_s=$DURATION_S"
    echo "warmup=$(awk -F, 'NR > 1 && $5 != "" {printf "%s%s %ss (%s)", sep, $1, $3, ($5 == "yes" ? "steady" : "at the cap"); sep = "; "}' "$WARMUP_CSV")"
  } >"$RESULTS_DIR/$NAME-meta.txt"
}

main() {
  begin_run profile
  CSV=$TMP_DIR/profile.csv; SYSCALLS_CSV=$TMP_DIR/syscalls.csv; SPLIT_CSV=$TMP_DIR/split.csv
  TOP_TXT=$TMP_DIR/top.txt; WARMUP_CSV=$TMP_DIR/warmup.csv
  echo "$PLAIN_PASS_CSV_HEADER" >"$CSV"
  echo "server,scenario,syscall,requests,sent,bytes,calls,errors" >"$SYSCALLS_CSV"
  echo "server,scenario,requests,category,samples" >"$SPLIT_CSV"
  echo "server,window,elapsed_s,requests_per_s,steady,jit_compiled_methods" >"$WARMUP_CSV"
  : >"$TOP_TXT"
  mkdir -p "$RESULTS_DIR" "$CACHE_DIR"

  install_packages_for wrk=wrk nginx=nginx-light strace=strace perf=linux-perf curl=curl python3=python3
  ulimit -n 65536 2>/dev/null || true
  FD_LIMIT=$(ulimit -n)
  detect_hardware_counters
  build_sample
  make_files
  take_perf_lock
  wait_for_quiet

  local name
  for name in "${SERVERS[@]}"; do log "starting $name on 127.0.0.1:${PORT[$name]}"; start_server "$name"; done
  for name in "${SERVERS[@]}"; do wait_for_port "$name"; check_server "$name"; done
  log "warming up each server (windows of ${WARMUP_WINDOW_S}s; .NET at least ${WARMUP_DOTNET_MIN_S}s, cap ${WARMUP_CAP_S}s)"
  for name in "${SERVERS[@]}"; do warm_up "$name"; done

  local line scenario file conns who record servers
  for line in "${SCENARIOS[@]}"; do
    read -r scenario file conns who record <<<"$line"
    servers=$BASE_SERVERS; [[ $who == all ]] && servers=$ALL_SERVERS
    taskset -c $CLIENT_CORE cat "$FILES_DIR/$file.bin" >/dev/null   # in the page cache for every server alike
    for name in $servers; do measure_cell "$name" "$scenario" "$file" "$conns" "$record"; done
  done

  write_metadata
  cp "$CSV" "$RESULTS_DIR/$NAME.csv"
  cp "$SYSCALLS_CSV" "$RESULTS_DIR/$NAME-syscalls.csv"
  cp "$SPLIT_CSV" "$RESULTS_DIR/$NAME-split.csv"
  cp "$TOP_TXT" "$RESULTS_DIR/$NAME-top.txt"
  cp "$WARMUP_CSV" "$RESULTS_DIR/$NAME-warmup.csv"
  cp "$COMMANDS_FILE" "$RESULTS_DIR/$NAME-commands.txt"
  python3 "$PERF_DIR/profile_report.py" --name "$NAME"
  log "done in $((SECONDS - STARTED))s: perf/results/$NAME.md"
}

main "$@"
