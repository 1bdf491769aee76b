#!/usr/bin/env bash
# perf/run.sh — SpliceTransport against Kestrel's sockets, nginx and Go: static files, /plaintext (plain and
# pipelined), idle keep-alive memory and CPU per GB. Options and method: perf/README.md ("run.sh").
#   perf/run.sh [--quick] [--rounds N] [--duration S] [--only PREFIX] [--name NAME] [--wait-quiet S]
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=perf/lib.sh
source "$PERF_DIR/lib.sh"

readonly SERVERS=(splice sockets nginx go)
declare -A PORT=([splice]=18081 [sockets]=18082 [nginx]=18083 [go]=18084)   # unusual ports: no clash with dev servers
readonly WRK_TIMEOUT=60s              # a 1 GiB download takes seconds; wrk's default 2 s would count it as an error
readonly PIPELINE_DEPTH=16            # requests per write in the pipelined /plaintext runs (TechEmpower's depth)
readonly IDLE_CONNECTIONS=10000       # keep-alive connections held open for the memory measurement
readonly IDLE_READY_TIMEOUT_S=120     # the idle client must have opened all its connections by then
readonly IDLE_SETTLE_S=1              # pause between "all connections open" and reading the server's RSS
readonly IDLE_PRIME_CONNECTIONS=200   # opened and closed before the baseline, so one-off costs (JIT) are not counted
readonly WANTED_FD_LIMIT=200000       # descriptors for 10,000 connections plus wrk's, with room to spare
readonly PAUSE_BETWEEN_RUNS_S=0.2     # lets TIME_WAIT sockets and the last ACKs drain between runs
# DOTNET_GCgen0size of the .NET idle servers, 1 MiB: the default budget follows this VM's 300 MiB L3 (75 MB), and
# the garbage in RSS when it was read swung the figure by several KiB per connection from run to run.
readonly IDLE_GEN0_SIZE=0x100000
# Test files (random bytes, so nothing compresses) and their connection counts (fewer, more): 100 MiB and 1 GiB use
# fewer so that downloads still complete within one run (256 parallel 1 GiB downloads would never finish).
FILES=(4KiB 64KiB 1MiB 100MiB 1GiB)
declare -A FILE_SIZE=([4KiB]=4096 [64KiB]=65536 [1MiB]=1048576 [100MiB]=104857600 [1GiB]=1073741824)
declare -A FILE_CONNECTIONS=([4KiB]="32 256" [64KiB]="32 256" [1MiB]="32 256" [100MiB]="8 32" [1GiB]="1 4")
readonly PLAINTEXT_CONNECTIONS="32 256"

MODE=full
ROUNDS=3            # at least 3 alternating rounds, so a median and a min-max mean something
DURATION_S=6        # per wrk run; 14 scenarios x 4 servers x 3 rounds x 6 s is about 17 minutes
ONLY="" NAME="" WAIT_QUIET_S=0   # --only (a scenario name prefix), --name and --wait-quiet: perf/README.md

parse_args() {
  while (($#)); do
    case "$1" in
      --quick) MODE=quick; ROUNDS=1; DURATION_S=2; WARMUP_WINDOW_S=1; WARMUP_CAP_S=10 ;;   # too short for .NET: marked
      --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
      --duration) DURATION_S=${2:?--duration needs seconds}; shift ;;
      --only) ONLY=${2:?--only needs a scenario name prefix, e.g. idle or file-4KiB}; shift ;;
      --name) NAME=${2:?--name needs a name}; shift ;;
      --wait-quiet) WAIT_QUIET_S=${2:?--wait-quiet needs seconds}; shift ;;
      -h|--help) usage 0 ;;
      *) usage ;;
    esac
    shift
  done
  # A partial run must not overwrite the full table: it gets its own name unless one is given.
  if [[ -z $NAME ]]; then NAME=latest; [[ -z $ONLY ]] || NAME=partial; fi
  [[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may use letters, digits, '.', '_' and '-' only"
  if [[ $MODE == quick ]]; then
    FILES=(4KiB 64KiB 1MiB 100MiB)   # no 1 GiB file, and 100 MiB downloads that complete within a 2 s run
    FILE_CONNECTIONS[100MiB]="4 16"
  fi
}

# Starts one server on SERVER_CORE. "idle": the .NET servers get the small fixed gen0 budget.
#   start_server <name> [idle]
start_server() {
  local name=$1 purpose=${2:-load} port=${PORT[$1]} cmd dotnet_env=""
  [[ $purpose == idle ]] && dotnet_env="DOTNET_GCgen0size=$IDLE_GEN0_SIZE"
  case "$name" in
    splice|sockets) cmd=$(dotnet_server_command "$name" "$port" "$dotnet_env") ;;
    nginx) cmd=$(nginx_server_command "$TMP_DIR/nginx" "$port" $((IDLE_CONNECTIONS + 1024))) ;;  # idle + wrk's
    go) cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/gopeer server -root $FILES_DIR -addr 127.0.0.1:$port" ;;
  esac
  start_server_process "$name" "$cmd" "$name ($purpose)"
}

server_rss_kib() {
  require_alive "$1" "when its RSS was read"
  local pid
  for pid in $(server_pids "$1"); do cat "/proc/$pid/status"; done | awk '/^VmRSS:/ {kib += $2} END {print kib + 0}'
}

readonly CSV_HEADER="round,server,scenario,kind,size_bytes,connections,pipeline,requests,bytes,duration_s,requests_per_s,mb_per_s,p99_ms,cpu_s,cpu_s_per_gb,errors_connect,errors_read,errors_write,errors_status,errors_timeout,rss_before_kib,rss_held_kib,connections_held,rss_before_gc_kib,rss_held_gc_kib,managed_before_bytes,managed_held_bytes,file_cached_pct,both_cores_cpu_s_per_gb"

# How much of a test file is in the page cache (fincore), in percent; empty for /plaintext. This VM reclaims
# file pages it deems cold, so a large file may be read partly from disk: the CSV and the table say so.
file_cached_pct() {
  [[ $1 == file ]] || return 0
  local file=$FILES_DIR$2 resident
  resident=$(fincore --bytes --noheadings --output RES "$file" 2>/dev/null) || return 0
  awk -v r="$resident" -v s="$(stat -c %s "$file")" 'BEGIN { printf "%.0f", (s > 0 ? 100 * r / s : 0) }'
}

# One wrk run against one server; appends a CSV row.
#   measure_wrk <round> <server> <scenario> <kind> <size_bytes> <path> <connections> <pipeline depth>
measure_wrk() {
  local round=$1 name=$2 scenario=$3 kind=$4 size=$5 path=$6 conns=$7 depth=$8
  local url="http://127.0.0.1:${PORT[$name]}$path" out=$TMP_DIR/wrk.out
  local script=(-s "$PERF_DIR/report.lua" "$url")
  ((depth == 1)) || script=(-s "$PERF_DIR/pipeline.lua" "$url" -- "$depth")
  local args=(wrk -t1 -c"$conns" -d"${DURATION_S}s" --timeout "$WRK_TIMEOUT" --latency "${script[@]}")
  ((round == 1)) && echo "client $name $scenario: taskset -c $CLIENT_CORE ${args[*]}" >>"$COMMANDS_FILE"
  require_alive "$name" "before $scenario"
  local ticks cores
  ticks=$(server_cpu_ticks "$name"); cores=$(cores_busy_ticks $SERVER_CORE $CLIENT_CORE)
  run_client "$out" "${args[@]}" || { cat "$out" >&2; die "wrk failed against '$name' in $scenario"; }
  ticks=$(($(server_cpu_ticks "$name") - ticks)); cores=$(($(cores_busy_ticks $SERVER_CORE $CLIENT_CORE) - cores))
  require_alive "$name" "after $scenario (it died under load)"
  declare -A r=(); read_wrk_result "$out" r "wrk against '$name' in $scenario"
  ((r[requests] > 0 || r[bytes] > 0)) || { cat "$out" >&2; die "server '$name' served nothing in $scenario"; }
  ((r[status] == 0)) || { cat "$out" >&2; die "server '$name' answered ${r[status]} requests with a non-2xx status in $scenario"; }
  awk -v round="$round" -v name="$name" -v scenario="$scenario" -v kind="$kind" -v size="$size" \
      -v conns="$conns" -v depth="$depth" -v req="${r[requests]}" -v bytes="${r[bytes]}" \
      -v dur_us="${r[duration_us]}" -v p99_us="${r[p99_us]}" -v ticks="$ticks" -v hz="$CLK_TCK" \
      -v errors="${r[connect]},${r[read]},${r[write]},${r[status]},${r[timeout]}" \
      -v cached="$(file_cached_pct "$kind" "$path")" -v cores_ticks="$cores" 'BEGIN {
        secs = dur_us / 1e6; cpu = ticks / hz; gb = bytes / 1e9
        # wrk gives a p99 of 0 when it has no usable latency samples (e.g. no request completed): left empty.
        printf "%s,%s,%s,%s,%s,%s,%s,%d,%d,%.3f,%.1f,%.2f,%s,%.2f,%s,%s,,,,,,,,%s,%s\n",
          round, name, scenario, kind, size, conns, depth, req, bytes, secs, req / secs,
          bytes / secs / 1e6, (p99_us > 0 ? sprintf("%.3f", p99_us / 1000) : ""), cpu,
          (gb > 0 ? sprintf("%.3f", cpu / gb) : ""), errors, cached,
          (gb > 0 ? sprintf("%.3f", cores_ticks / hz / gb) : "") }' >>"$RAW_CSV"
  local errors=$((r[connect] + r[read] + r[write] + r[timeout]))
  ((errors == 0)) || log "  note: wrk counted $errors socket errors against $name in $scenario"
  sleep "$PAUSE_BETWEEN_RUNS_S"
}

# GET /perf/gc of a .NET idle server (a forced, compacting full GC); echoes the live managed bytes after it.
managed_bytes_after_gc() {
  local json
  json=$(taskset -c $CLIENT_CORE curl -s --max-time 30 "$(server_url "$1")/perf/gc") || die "server '$1': GET /perf/gc failed"
  sed -n 's/.*"totalMemoryBytes":\([0-9]*\).*/\1/p' <<<"$json" | grep . || die "server '$1': /perf/gc answered '$json'"
}

# One round of the idle scenario on a fresh server: primed, then IDLE_CONNECTIONS keep-alive connections opened
# and held; its RSS (and for .NET the live managed heap after a forced full GC) before and while they are held.
measure_idle_memory() {
  local round=$1 name=$2 scenario="idle-$IDLE_CONNECTIONS" out=$TMP_DIR/idle.out release=$TMP_DIR/idle.release
  local idle=("$BIN_DIR/gopeer" idle -addr "127.0.0.1:${PORT[$name]}")
  local cmd=("${idle[@]}" -n "$IDLE_CONNECTIONS" -release "$release" -max-hold "$((IDLE_READY_TIMEOUT_S + 60))s")
  ((round == 1)) && echo "client $name $scenario: taskset -c $CLIENT_CORE ${cmd[*]}" >>"$COMMANDS_FILE"
  start_server "$name" idle
  wait_for_port "$name"
  check_server "$name" plaintext-only
  # Priming: connections that each make their request and close, so that the code they run is compiled (and
  # tiered up) before the baseline.
  run_client "$TMP_DIR/prime.out" "${idle[@]}" -n "$IDLE_PRIME_CONNECTIONS" -max-hold 0s \
    || { cat "$TMP_DIR/prime.out" >&2; die "priming '$name' for $scenario failed"; }
  sleep "$IDLE_SETTLE_S"
  rm -f "$release"
  local rss_before rss_held rss_before_gc="" rss_held_gc="" managed_before="" managed_held="" ready
  local deadline=$((SECONDS + IDLE_READY_TIMEOUT_S))
  # For .NET a forced full GC before the baseline (which also compiles /perf/gc, so that is not counted): the
  # baseline RSS is then also the "before" of the after-GC pair.
  is_dotnet_server "$name" && managed_before=$(managed_bytes_after_gc "$name")
  rss_before=$(server_rss_kib "$name")
  [[ -z $managed_before ]] || rss_before_gc=$rss_before
  taskset -c $CLIENT_CORE "${cmd[@]}" >"$out" 2>&1 &
  CLIENT_PID=$!
  until ready=$(grep -m1 '^READY ' "$out"); do
    kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$out" >&2; die "idle client against '$name' exited early"; }
    ((SECONDS < deadline)) || die "idle client against '$name' not ready within ${IDLE_READY_TIMEOUT_S}s"
    sleep 0.2
  done
  sleep "$IDLE_SETTLE_S"
  rss_held=$(server_rss_kib "$name")
  if [[ -n $managed_before ]]; then
    managed_held=$(managed_bytes_after_gc "$name")
    rss_held_gc=$(server_rss_kib "$name")
  fi
  touch "$release"
  wait "$CLIENT_PID" || true
  CLIENT_PID=""
  require_alive "$name" "after $scenario"
  stop_server "$name"
  local held=${ready#*held=}; held=${held%% *}
  ((held == IDLE_CONNECTIONS)) || { log "  note: $name held only $held of $IDLE_CONNECTIONS connections: $ready"; cat "$out" >&2; }
  echo "$round,$name,$scenario,idle,,$IDLE_CONNECTIONS,,,,,,,,,,,,,,,$rss_before,$rss_held,$held,$rss_before_gc,$rss_held_gc,$managed_before,$managed_held,," >>"$RAW_CSV"
  log "  $name: $(awk -v b="$rss_before" -v h="$rss_held" -v n="$held" 'BEGIN {printf "%.2f", (h - b) / n}') KiB RSS per connection"
  sleep "$PAUSE_BETWEEN_RUNS_S"
}

# All load scenarios as "name kind size_bytes path connections depth", files first, then /plaintext.
list_scenarios() {
  local file conns depth
  for file in "${FILES[@]}"; do
    for conns in ${FILE_CONNECTIONS[$file]}; do echo "file-$file-c$conns file ${FILE_SIZE[$file]} /$file.bin $conns 1"; done
  done
  for conns in $PLAINTEXT_CONNECTIONS; do
    for depth in 1 "$PIPELINE_DEPTH"; do echo "plaintext-c$conns-p$depth plaintext 13 /plaintext $conns $depth"; done
  done
}

selected() { [[ -z $ONLY || $1 == $ONLY* ]]; }

# Idle memory first, a fresh server per round and server; then the load servers are started once, each is
# warmed up to steady state, and the load scenarios run in rounds, the servers alternating within each scenario
# (so a slow drift of the machine meets every server alike).
run_rounds() {
  local round name scenario kind size path conns depth line scenarios=()
  while read -r line; do selected "${line%% *}" && scenarios+=("$line"); done < <(list_scenarios)
  if selected "idle-$IDLE_CONNECTIONS"; then
    for ((round = 1; round <= ROUNDS; round++)); do
      log "round $round of $ROUNDS: idle memory, a fresh server each"
      for name in "${SERVERS[@]}"; do measure_idle_memory "$round" "$name"; done
    done
  elif ((${#scenarios[@]} == 0)); then
    die "no scenario starts with '$ONLY' (see list_scenarios)"
  fi
  ((${#scenarios[@]})) || return 0
  for name in "${SERVERS[@]}"; do log "starting $name on 127.0.0.1:${PORT[$name]}"; start_server "$name"; done
  for name in "${SERVERS[@]}"; do wait_for_port "$name"; check_server "$name"; done
  log "warming up each server to steady state (windows of ${WARMUP_WINDOW_S}s, cap ${WARMUP_CAP_S}s)"
  for name in "${SERVERS[@]}"; do warm_up "$name"; done
  for ((round = 1; round <= ROUNDS; round++)); do
    for line in "${scenarios[@]}"; do
      read -r scenario kind size path conns depth <<<"$line"
      log "round $round of $ROUNDS: $scenario"
      # Read the file once first, so that it starts in the page cache for every server alike.
      [[ $kind != file ]] || taskset -c $CLIENT_CORE cat "$FILES_DIR$path" >/dev/null
      for name in "${SERVERS[@]}"; do measure_wrk "$round" "$name" "$scenario" "$kind" "$size" "$path" "$conns" "$depth"; done
    done
  done
}

main() {
  ARGS="$*"
  parse_args "$@"
  begin_run perf
  RAW_CSV=$TMP_DIR/raw.csv WARMUP_CSV=$TMP_DIR/warmup.csv CLK_TCK=$(getconf CLK_TCK)
  install_packages_for wrk=wrk nginx=nginx-light go=golang-go curl=curl taskset=util-linux python3=python3
  raise_fd_limit "$WANTED_FD_LIMIT"
  ((FD_LIMIT > IDLE_CONNECTIONS + 1000)) || die "open-file limit is $FD_LIMIT, too low for $IDLE_CONNECTIONS connections"
  build_sample
  build_gopeer
  make_files
  echo "$CSV_HEADER" >"$RAW_CSV"
  echo "$WARMUP_CSV_HEADER" >"$WARMUP_CSV"
  take_perf_lock
  wait_for_quiet
  run_rounds
  # The raw results and what produced them: `python3 perf/report.py --name NAME` redraws NAME.md from these alone.
  {
    common_metadata
    printf '%s\n' "mode=$MODE" "rounds=$ROUNDS" "duration_s=$DURATION_S" "only=$ONLY" \
      "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')" "go=$(go version | awk '{print $3}')" \
      "server_core=$SERVER_CORE" "client_core=$CLIENT_CORE" "idle_connections=$IDLE_CONNECTIONS" \
      "idle_gen0size=$IDLE_GEN0_SIZE" "idle_prime_connections=$IDLE_PRIME_CONNECTIONS" \
      "warmup_window_s=$WARMUP_WINDOW_S" "warmup_cap_s=$WARMUP_CAP_S" "warmup_rule=$(warmup_rule)"
  } >"$RESULTS_DIR/$NAME-meta.txt"
  cp "$COMMANDS_FILE" "$RESULTS_DIR/$NAME-commands.txt"
  cp "$RAW_CSV" "$RESULTS_DIR/$NAME.csv"
  rm -f "$RESULTS_DIR/$NAME-warmup.csv"
  (($(wc -l <"$WARMUP_CSV") == 1)) || cp "$WARMUP_CSV" "$RESULTS_DIR/$NAME-warmup.csv"
  python3 "$PERF_DIR/report.py" --name "$NAME"
  log "done in $((SECONDS - STARTED))s: perf/results/$NAME.md and the rest of perf/results/$NAME*"
}

main "$@"
