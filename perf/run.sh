#!/usr/bin/env bash
# perf/run.sh — compares SpliceTransport with Kestrel's socket transport, nginx and Go's net/http
# on static files, /plaintext (with and without pipelining), idle keep-alive memory and CPU per GB.
#
#   perf/run.sh            full run: 3 rounds, all sizes up to 1 GiB (under 35 minutes)
#   perf/run.sh --quick    rough run: 1 round, short runs, no 1 GiB file, short warm-up (about 3 minutes)
#   perf/run.sh --rounds N --duration S   override either
#   perf/run.sh --only idle --name idle-a  only the scenarios whose name starts with "idle", into results/idle-a.*
#   perf/run.sh --gcdump   also snapshot the .NET idle servers with dotnet-gcdump (managed bytes per type)
#   perf/run.sh --wait-quiet 600   first wait (up to 600 s) until others' work leaves the machine 90% idle
#
# Writes perf/results/latest.{md,csv,svg} and the raw files next to them (perf/README.md says what each holds).
# Every server runs on core 0 and every client on core 1 (taskset), so each server gets the same one core.
# Traffic goes to 127.0.0.1 only.
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

# Test files: name and size. Random bytes, so nothing can be compressed or deduplicated on the way.
readonly FILE_NAMES=(4KiB 64KiB 1MiB 100MiB 1GiB)
declare -A FILE_SIZE=([4KiB]=4096 [64KiB]=65536 [1MiB]=1048576 [100MiB]=104857600 [1GiB]=1073741824)
# Connections per file size (fewer, more). 100 MiB and 1 GiB use fewer connections so that downloads
# still complete within one run (256 parallel 1 GiB downloads would share ~5 GB/s and never finish);
# every server gets the same counts.
declare -A FILE_CONNECTIONS=([4KiB]="32 256" [64KiB]="32 256" [1MiB]="32 256" [100MiB]="8 32" [1GiB]="1 4")
readonly PLAINTEXT_CONNECTIONS="32 256"

MODE=full
ROUNDS=3            # at least 3 alternating rounds, so a median and a min-max mean something
DURATION_S=6        # per wrk run; 14 scenarios x 4 servers x 3 rounds x 6 s is about 17 minutes
ONLY=""             # run only the scenarios whose name starts with this (a glob); "" = all
NAME=latest         # results go to perf/results/$NAME.{md,csv,svg}, $NAME-meta.txt, ...
NAME_GIVEN=0
WAIT_QUIET_S=0      # --wait-quiet: how long to wait for an idle machine before measuring (0: don't)
GCDUMP=0            # 1: dotnet-gcdump snapshots of the .NET idle servers, before and while holding

parse_args() {
  while (($#)); do
    case "$1" in
      --quick) MODE=quick; ROUNDS=1; DURATION_S=2; WARMUP_WINDOW_S=1; WARMUP_CAP_S=10 ;;   # too short for .NET: marked
      --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
      --duration) DURATION_S=${2:?--duration needs seconds}; shift ;;
      --only) ONLY=${2:?--only needs a scenario name prefix, e.g. idle or file-4KiB}; shift ;;
      --name) NAME=${2:?--name needs a name}; NAME_GIVEN=1; shift ;;
      --gcdump) GCDUMP=1 ;;
      --wait-quiet) WAIT_QUIET_S=${2:?--wait-quiet needs seconds}; shift ;;
      -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
  [[ $NAME =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may use letters, digits, '.', '_' and '-' only"
  # A partial run must not overwrite the full table: it gets its own name unless one is given.
  if [[ -n $ONLY ]] && ((!NAME_GIVEN)); then NAME=partial; fi
  if [[ $MODE == quick ]]; then
    FILES=(4KiB 64KiB 1MiB 100MiB)   # quick mode skips the 1 GiB file
    FILE_CONNECTIONS[100MiB]="4 16"  # so that 100 MiB downloads still complete within a 2 s run
  else
    FILES=("${FILE_NAMES[@]}")
  fi
}

# ---------------------------------------------------------------------------------------------- set-up

# dotnet-gcdump, only for --gcdump: a global tool from NuGet, into ~/.dotnet/tools.
install_gcdump() {
  export PATH=$PATH:$HOME/.dotnet/tools
  command -v dotnet-gcdump >/dev/null && return
  log "installing dotnet-gcdump (dotnet tool install -g)"
  dotnet tool install -g dotnet-gcdump >"$TMP_DIR/gcdump-install.log" 2>&1 \
    || { cat "$TMP_DIR/gcdump-install.log" >&2; die "could not install dotnet-gcdump (needed for --gcdump)"; }
}

raise_fd_limit() {
  ulimit -n "$WANTED_FD_LIMIT" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  local limit; limit=$(ulimit -n)
  ((limit > IDLE_CONNECTIONS + 1000)) || die "open-file limit is $limit, too low for $IDLE_CONNECTIONS connections"
  FD_LIMIT=$limit
}

# --------------------------------------------------------------------------------------------- servers

# Starts one server in the background on SERVER_CORE; records its PID and the exact command.
#   start_server <name> [idle]   "idle": the .NET servers get the small fixed gen0 budget
# The .NET servers run with --perf-endpoints true: /perf/gc for the idle scenario, /perf/jit for the warm-up
# (two more routes, which the load never requests).
start_server() {
  local name=$1 purpose=${2:-load} port=${PORT[$1]} cmd dotnet_env=""
  if [[ $purpose == idle ]]; then
    dotnet_env="DOTNET_GCgen0size=$IDLE_GEN0_SIZE"
  fi
  case "$name" in
    splice|sockets)
      cmd=$(dotnet_server_command "$name" "$port" "$dotnet_env") ;;
    nginx)
      # the idle connections plus wrk's
      cmd=$(nginx_server_command "$TMP_DIR/nginx" "$port" $((IDLE_CONNECTIONS + 1024))) ;;
    go)
      cmd="env GOMAXPROCS=1 taskset -c $SERVER_CORE $BIN_DIR/gopeer server -root $FILES_DIR -addr 127.0.0.1:$port" ;;
  esac
  start_server_process "$name" "$cmd" "$name ($purpose)"
}

start_all_servers() {
  local name
  for name in "${SERVERS[@]}"; do
    log "starting $name on 127.0.0.1:${PORT[$name]} (core $SERVER_CORE)"
    start_server "$name"
  done
  for name in "${SERVERS[@]}"; do
    wait_for_port "$name"
    check_server "$name"
    log "$name answers correctly (pid ${SERVER_PID[$name]})"
  done
}

server_rss_kib() {
  require_alive "$1" "when its RSS was read"
  local total=0 pid
  for pid in $(server_pids "$1"); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
  done
  echo "$total"
}

# ------------------------------------------------------------------------------------------ measuring

readonly CSV_HEADER="round,server,scenario,kind,size_bytes,connections,pipeline,requests,bytes,duration_s,requests_per_s,mb_per_s,p99_ms,cpu_s,cpu_s_per_gb,errors_connect,errors_read,errors_write,errors_status,errors_timeout,rss_before_kib,rss_held_kib,connections_held,rss_before_gc_kib,rss_held_gc_kib,managed_before_bytes,managed_held_bytes,file_cached_pct,both_cores_cpu_s_per_gb"
readonly WARMUP_CSV_HEADER="server,window,elapsed_s,requests_per_s,steady,jit_compiled_methods"

# How much of a test file is in the page cache (fincore), in percent; empty for /plaintext. This VM reclaims
# file pages it deems cold, so a large file may be read partly from disk: the CSV and the table say so.
file_cached_pct() {
  [[ $1 == file ]] || return 0
  local file=$FILES_DIR${2} resident
  resident=$(fincore --bytes --noheadings --output RES "$file" 2>/dev/null) || return 0
  awk -v r="$resident" -v s="$(stat -c %s "$file")" 'BEGIN { printf "%.0f", (s > 0 ? 100 * r / s : 0) }'
}

# One wrk run against one server; appends a CSV row.
#   measure_wrk <round> <server> <scenario> <kind> <size_bytes> <path> <connections> <pipeline depth>
measure_wrk() {
  local round=$1 name=$2 scenario=$3 kind=$4 size=$5 path=$6 conns=$7 depth=$8
  local url="http://127.0.0.1:${PORT[$name]}$path" out=$TMP_DIR/wrk.out
  local args=(wrk -t1 -c"$conns" -d"${DURATION_S}s" --timeout "$WRK_TIMEOUT" --latency)
  if ((depth > 1)); then
    args+=(-s "$PERF_DIR/pipeline.lua" "$url" -- "$depth")
  else
    args+=(-s "$PERF_DIR/report.lua" "$url")
  fi
  ((round == 1)) && echo "client $name $scenario: taskset -c $CLIENT_CORE ${args[*]}" >>"$COMMANDS_FILE"

  require_alive "$name" "before $scenario"
  local ticks_before ticks_after cores_before cores_after
  ticks_before=$(server_cpu_ticks "$name"); cores_before=$(cores_busy_ticks $SERVER_CORE $CLIENT_CORE)
  run_client "$out" "${args[@]}" || { cat "$out" >&2; die "wrk failed against '$name' in $scenario"; }
  ticks_after=$(server_cpu_ticks "$name"); cores_after=$(cores_busy_ticks $SERVER_CORE $CLIENT_CORE)
  require_alive "$name" "after $scenario (it died under load)"

  declare -A r=(); read_wrk_result "$out" r "wrk against '$name' in $scenario"
  ((r[requests] > 0 || r[bytes] > 0)) || { cat "$out" >&2; die "server '$name' served nothing in $scenario"; }
  ((r[status] == 0)) || { cat "$out" >&2; die "server '$name' answered ${r[status]} requests with a non-2xx status in $scenario"; }

  awk -v round="$round" -v name="$name" -v scenario="$scenario" -v kind="$kind" -v size="$size" \
      -v conns="$conns" -v depth="$depth" -v req="${r[requests]}" -v bytes="${r[bytes]}" \
      -v dur_us="${r[duration_us]}" -v p99_us="${r[p99_us]}" -v ticks=$((ticks_after - ticks_before)) \
      -v hz="$CLK_TCK" -v ec="${r[connect]}" -v er="${r[read]}" -v ew="${r[write]}" -v es="${r[status]}" \
      -v et="${r[timeout]}" -v cached="$(file_cached_pct "$kind" "$path")" \
      -v cores_ticks=$((cores_after - cores_before)) 'BEGIN {
        secs = dur_us / 1e6; cpu = ticks / hz; gb = bytes / 1e9
        # wrk gives a p99 of 0 when it has no usable latency samples (e.g. no request completed): left empty.
        printf "%s,%s,%s,%s,%s,%s,%s,%d,%d,%.3f,%.1f,%.2f,%s,%.2f,%s,%s,%s,%s,%s,%s,,,,,,,,%s,%s\n",
          round, name, scenario, kind, size, conns, depth, req, bytes, secs, req / secs,
          bytes / secs / 1e6, (p99_us > 0 ? sprintf("%.3f", p99_us / 1000) : ""), cpu,
          (gb > 0 ? sprintf("%.3f", cpu / gb) : ""),
          ec, er, ew, es, et, cached, (gb > 0 ? sprintf("%.3f", cores_ticks / hz / gb) : "") }' >>"$RAW_CSV"

  local errors=$((r[connect] + r[read] + r[write] + r[timeout]))
  ((errors == 0)) || log "  note: wrk counted $errors socket errors against $name in $scenario"
  sleep "$PAUSE_BETWEEN_RUNS_S"
}

# GET /perf/gc of a .NET idle server (a forced, compacting full GC); echoes the live managed bytes after it.
managed_bytes_after_gc() {
  local name=$1 json
  json=$(taskset -c $CLIENT_CORE curl -s --max-time 30 "http://127.0.0.1:${PORT[$name]}/perf/gc") \
    || die "server '$name': GET /perf/gc failed"
  sed -n 's/.*"totalMemoryBytes":\([0-9]*\).*/\1/p' <<<"$json" | grep . || die "server '$name': /perf/gc answered '$json'"
}

# dotnet-gcdump of a .NET idle server, kept as its text report (bytes and count per type).
gcdump_report() {
  local name=$1 round=$2 state=$3 dir=$RESULTS_DIR/$NAME-gcdump dump=$TMP_DIR/idle.gcdump
  mkdir -p "$dir"
  taskset -c $CLIENT_CORE dotnet-gcdump collect -p "${SERVER_PID[$name]}" -o "$dump" >"$TMP_DIR/gcdump.log" 2>&1 \
    || { cat "$TMP_DIR/gcdump.log" >&2; die "dotnet-gcdump collect of '$name' failed"; }
  taskset -c $CLIENT_CORE dotnet-gcdump report "$dump" >"$dir/$name-round$round-$state.txt" 2>&1 \
    || die "dotnet-gcdump report of '$name' failed"
  rm -f "$dump"
}

# Starts a fresh server for one round of the idle scenario, primes it, opens IDLE_CONNECTIONS keep-alive
# connections to it and records its RSS (and, for .NET, the live managed heap after a forced full GC) before
# and while they are held; then stops the server. Every round starts from the same state.
measure_idle_memory() {
  local round=$1 name=$2 scenario="idle-$IDLE_CONNECTIONS"
  local out=$TMP_DIR/idle.out release=$TMP_DIR/idle.release dotnet=0
  is_dotnet_server "$name" && dotnet=1
  local cmd=("$BIN_DIR/gopeer" idle -addr "127.0.0.1:${PORT[$name]}" -n "$IDLE_CONNECTIONS"
             -release "$release" -max-hold "$((IDLE_READY_TIMEOUT_S + 60))s")
  ((round == 1)) && echo "client $name $scenario: taskset -c $CLIENT_CORE ${cmd[*]}" >>"$COMMANDS_FILE"

  start_server "$name" idle
  wait_for_port "$name"
  check_server "$name" plaintext-only
  # Priming: a few hundred connections, each making its request and closing, so that the code they run has
  # been compiled (and tiered up) before the baseline.
  run_client "$TMP_DIR/prime.out" "$BIN_DIR/gopeer" idle -addr "127.0.0.1:${PORT[$name]}" -n "$IDLE_PRIME_CONNECTIONS" -max-hold 0s \
    || { cat "$TMP_DIR/prime.out" >&2; die "priming '$name' for $scenario failed"; }
  sleep "$IDLE_SETTLE_S"
  rm -f "$release"
  local rss_before rss_held rss_held_gc="" managed_before="" managed_held=""
  local ready deadline=$((SECONDS + IDLE_READY_TIMEOUT_S))
  # Baseline. For .NET a forced full GC first (which also compiles /perf/gc, so that is not counted); a gcdump
  # before it, so that whatever its EventPipe session leaves in the process is in the baseline too.
  if ((dotnet)); then
    if ((GCDUMP)); then gcdump_report "$name" "$round" before; fi
    managed_before=$(managed_bytes_after_gc "$name")
  fi
  rss_before=$(server_rss_kib "$name")
  taskset -c $CLIENT_CORE "${cmd[@]}" >"$out" 2>&1 &
  CLIENT_PID=$!
  until ready=$(grep -m1 '^READY ' "$out"); do
    kill -0 "$CLIENT_PID" 2>/dev/null || { cat "$out" >&2; die "idle client against '$name' exited early"; }
    ((SECONDS < deadline)) || die "idle client against '$name' not ready within ${IDLE_READY_TIMEOUT_S}s"
    sleep 0.2
  done
  sleep "$IDLE_SETTLE_S"
  rss_held=$(server_rss_kib "$name")
  if ((dotnet)); then
    managed_held=$(managed_bytes_after_gc "$name")
    rss_held_gc=$(server_rss_kib "$name")
    if ((GCDUMP)); then gcdump_report "$name" "$round" held; fi
  fi
  touch "$release"
  wait "$CLIENT_PID" || true
  CLIENT_PID=""
  require_alive "$name" "after $scenario"
  stop_server "$name"

  local held=${ready#*held=}; held=${held%% *}
  ((held == IDLE_CONNECTIONS)) || { log "  note: $name held only $held of $IDLE_CONNECTIONS connections: $ready"; cat "$out" >&2; }
  # The baseline RSS is read after the forced GC, so for .NET it is also the "before" of the after-GC pair.
  local rss_before_gc=""; ((dotnet)) && rss_before_gc=$rss_before
  echo "$round,$name,$scenario,idle,,$IDLE_CONNECTIONS,,,,,,,,,,,,,,,$rss_before,$rss_held,$held,$rss_before_gc,$rss_held_gc,$managed_before,$managed_held,," >>"$RAW_CSV"
  log "  $name: $(awk -v b="$rss_before" -v h="$rss_held" -v n="$held" 'BEGIN {printf "%.2f", (h - b) / n}') KiB RSS per connection"
  sleep "$PAUSE_BETWEEN_RUNS_S"
}

# All scenarios as "name kind size_bytes path connections depth", files first, then /plaintext.
list_scenarios() {
  local file conns depth
  for file in "${FILES[@]}"; do
    for conns in ${FILE_CONNECTIONS[$file]}; do
      echo "file-$file-c$conns file ${FILE_SIZE[$file]} /$file.bin $conns 1"
    done
  done
  for conns in $PLAINTEXT_CONNECTIONS; do
    for depth in 1 "$PIPELINE_DEPTH"; do
      echo "plaintext-c$conns-p$depth plaintext 13 /plaintext $conns $depth"
    done
  done
}

selected() {
  [[ -z $ONLY || $1 == $ONLY* ]]
}

# Idle memory first, a fresh server per round and server; then the load servers are started once, each is
# warmed up to steady state, and the load scenarios run in rounds.
run_rounds() {
  local round name scenario kind size path conns depth line
  local all; mapfile -t all < <(list_scenarios)
  local scenarios=()
  for line in "${all[@]}"; do selected "${line%% *}" && scenarios+=("$line"); done
  if selected "idle-$IDLE_CONNECTIONS"; then
    for ((round = 1; round <= ROUNDS; round++)); do
      log "round $round of $ROUNDS: idle memory, a fresh server each"
      for name in "${SERVERS[@]}"; do measure_idle_memory "$round" "$name"; done
    done
  fi
  if ((${#scenarios[@]} == 0)); then
    [[ -z $ONLY ]] || selected "idle-$IDLE_CONNECTIONS" || die "no scenario starts with '$ONLY' (see list_scenarios)"
    return
  fi

  start_all_servers
  log "warming up each server to steady state (windows of ${WARMUP_WINDOW_S}s, cap ${WARMUP_CAP_S}s)"
  for name in "${SERVERS[@]}"; do warm_up "$name"; done
  for ((round = 1; round <= ROUNDS; round++)); do
    for line in "${scenarios[@]}"; do
      read -r scenario kind size path conns depth <<<"$line"
      log "round $round of $ROUNDS: $scenario"
      # Read the file once first, so that it starts in the page cache for every server alike.
      if [[ $kind == file ]]; then taskset -c $CLIENT_CORE cat "$FILES_DIR$path" >/dev/null; fi
      # Servers alternate within each scenario (A B C D), so slow drifts of a noisy machine hit all alike.
      for name in "${SERVERS[@]}"; do measure_wrk "$round" "$name" "$scenario" "$kind" "$size" "$path" "$conns" "$depth"; done
    done
  done
}

write_metadata() {
  {
    common_metadata
    printf '%s\n' "mode=$MODE" "rounds=$ROUNDS" "duration_s=$DURATION_S" \
      "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')" "go=$(go version | awk '{print $3}')" \
      "commit=$BUILD_COMMIT" "src_commit=$SRC_COMMIT" "server_core=$SERVER_CORE" "client_core=$CLIENT_CORE" \
      "idle_connections=$IDLE_CONNECTIONS" "idle_gen0size=$IDLE_GEN0_SIZE" "idle_prime_connections=$IDLE_PRIME_CONNECTIONS" \
      "warmup_window_s=$WARMUP_WINDOW_S" "warmup_cap_s=$WARMUP_CAP_S" \
      "warmup_rule=none of the last $WARMUP_STABLE_WINDOWS windows more than $WARMUP_RISE_PCT% above the best before them and, for .NET, at least ${WARMUP_DOTNET_MIN_S} s and the count of JIT-compiled methods grown by at most $WARMUP_JIT_GROWTH_PCT% during them" \
      "only=$ONLY" "gcdump=$GCDUMP"
  } >"$1"
}

main() {
  ARGS="$*"
  parse_args "$@"
  begin_run perf
  RAW_CSV=$TMP_DIR/raw.csv
  WARMUP_CSV=$TMP_DIR/warmup.csv
  CLK_TCK=$(getconf CLK_TCK)
  mkdir -p "$RESULTS_DIR" "$BIN_DIR"

  install_packages_for wrk=wrk nginx=nginx-light go=golang-go h2load=nghttp2-client curl=curl taskset=util-linux python3=python3
  if ((GCDUMP)); then install_gcdump; fi
  raise_fd_limit
  build_sample
  build_gopeer
  make_files
  if ((GCDUMP)); then rm -rf "${RESULTS_DIR:?}/$NAME-gcdump"; fi

  echo "$CSV_HEADER" >"$RAW_CSV"
  echo "$WARMUP_CSV_HEADER" >"$WARMUP_CSV"
  wait_for_quiet
  run_rounds

  # Raw results and what produced them; `python3 perf/report.py --name NAME` redraws the tables from these alone.
  write_metadata "$RESULTS_DIR/$NAME-meta.txt"
  cp "$COMMANDS_FILE" "$RESULTS_DIR/$NAME-commands.txt"
  cp "$RAW_CSV" "$RESULTS_DIR/$NAME.csv"
  if (($(wc -l <"$WARMUP_CSV") > 1)); then cp "$WARMUP_CSV" "$RESULTS_DIR/$NAME-warmup.csv"; else rm -f "$RESULTS_DIR/$NAME-warmup.csv"; fi
  # Writes $NAME.md and $NAME.svg.
  python3 "$PERF_DIR/report.py" --name "$NAME"
  log "done in $((SECONDS - STARTED))s: perf/results/$NAME.md and the rest of perf/results/$NAME*"
}

main "$@"
