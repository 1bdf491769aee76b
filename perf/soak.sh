#!/usr/bin/env bash
# perf/soak.sh — a bounded soak test: N minutes of mixed load against the sample on SpliceTransport,
# watching the server for leaks (descriptors, threads, memory) and for any error.
#
#   perf/soak.sh                  2 minutes of load (3 to 4 minutes in all, with build, warm-up and drain)
#   perf/soak.sh --minutes N      N minutes of load (N >= 1; memory growth is judged from N >= 2)
#   perf/soak.sh --port P         serve on 127.0.0.1:P (default 5317; soak runs keep to 5300-5399)
#
# All at once, clients on core 1 and the server alone on core 0: wrk on /plaintext, a 4 KiB and a 1 MiB file and
# 16-deep pipelined /plaintext, in short runs (connections come and go); curl loops aborting 64 MiB downloads
# part-way; slow readers of the 64 MiB file. The server's descriptors, threads and VmRSS are sampled after warm-up,
# every minute, and once the load has stopped and drained. Exits 0 (PASS) or 1 (FAIL: any error, the server
# exiting, or growth); the last line printed is the one summary line. Result: perf/results/soak.md.
# Run as root (it apt-get installs wrk and curl if missing). Traffic goes to 127.0.0.1 only.
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$PERF_DIR/lib.sh"

declare -A PORT=([soak]=5317)         # soak runs use 5300-5399, so they do not meet other runs' servers
MINUTES=2
readonly SAMPLE_INTERVAL_S=60         # one row of the table per minute of load
readonly WARMUP_S=15                  # mixed load before the baseline, so JIT tiering, pools and buffers settle
readonly DRAIN_TIMEOUT_S=10 SETTLE_S=1   # after the load: connections gone by then, then a pause for the last closes
readonly MAX_ITERATIONS=100000        # every load loop is bounded in count as well as by the clock
readonly RETRY_PAUSE_S=1              # after a client run that failed at once, e.g. on a dead server
readonly EVIDENCE_LINES=40            # at most this many lines of each kind of failure are printed
readonly WRK_RUN_S=15 WRK_MIN_RUN_S=2   # back-to-back wrk runs, so connections come and go; a shorter one is not worth it
readonly WRK_TIMEOUT=10s              # loopback answers in milliseconds: a response this late is an error
declare -A CONNECTIONS=([plaintext]=32 [pipelined]=8 [file-4KiB]=16 [file-1MiB]=8)   # of each wrk load
readonly PIPELINE_DEPTH=16            # requests per write (perf/pipeline.lua; TechEmpower's depth)
readonly ABORT_LOOPS=2                # loops of aborted 64 MiB downloads, every other one a range
readonly ABORT_RATE=50M               # curl's M is MiB: 64 MiB takes 1.3 s, longer than any ABORT_AFTER_S...
readonly ABORT_AFTER_S=(0.05 0.1 0.2 0.4)   # ...so curl's --max-time, each of these in turn, ends it mid-body
readonly ABORT_RANGE_START=1048577    # 1 MiB + 1: an odd offset, aligned with no page or block size
readonly CURL_TIMED_OUT=28            # curl's exit status when --max-time ends it: the intended abort
readonly SLOW_READERS=4 SLOW_RATE=4M  # the server's sends wait on a full socket most of the time; each must complete
readonly SLOW_START_S=20              # 64 MiB at 4 MiB/s takes 16 s: a slow download starts only this long before the end
readonly SLOW_MAX_TIME_S=60           # far past 16 s: a download this slow means a stalled server
FILES=(4KiB 1MiB 64MiB)               # random bytes, made once and cached with perf/run.sh's
declare -A FILE_SIZE=([4KiB]=4096 [1MiB]=1048576 [64MiB]=67108864)
# The verdict's thresholds (see perf/results/README.md, "Soak").
readonly FD_MARGIN=16                 # descriptors after drain may exceed the baseline by this much
readonly THREAD_MARGIN=4              # threads at the end may exceed the baseline by this much, once the pool
readonly THREAD_SETTLE_TIMEOUT_S=30   # has retired the workers it added (after 20 s idle), or after this long
readonly RSS_GROWTH_LIMIT_MIB=20      # mean RSS of the second half of the minutes over the first half
# Workstation GC (the Web SDK's server GC lets gen0 grow to 200 MiB here) with a 1 MiB gen0 budget: RSS follows
# what the server holds, not when its GC last ran.
readonly GC_ENV=DOTNET_GCgen0size=0x100000

SERVER_EXIT="" SUMMARY_PRINTED=0 LOAD_PIDS=() ROWS=() FAIL_REASONS=()   # ROWS: one table row per sample

parse_args() {
  while (($#)); do
    case "$1" in
      --minutes) MINUTES=${2:?--minutes needs a number}; shift ;;
      --port) PORT[soak]=${2:?--port needs a number}; shift ;;
      -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; SUMMARY_PRINTED=1; exit 0 ;;
      *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
  done
  [[ $MINUTES =~ ^[1-9][0-9]*$ ]] || die "--minutes must be a whole number >= 1, not '$MINUTES'"
  [[ ${PORT[soak]} =~ ^[0-9]+$ ]] && ((PORT[soak] > 0 && PORT[soak] < 65536)) || die "--port must be a TCP port, not '${PORT[soak]}'"
}

server_alive() { kill -0 "${SERVER_PID[soak]}" 2>/dev/null; }
proc_status() { awk -v key="$1:" '$1 == key {print $2}' "/proc/${SERVER_PID[soak]}/status"; }
stop_load() { stop_pids LOAD_PIDS; }
log_count() { grep -c "^$1: " "$TMP_DIR/soak.log" || true; }
field() { local -a f; read -ra f <<<"$1"; echo "${f[$2]}"; }   # field <row> <index>
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }     # mib <KiB>
# Server-side sockets of the port that still hold a descriptor (TIME-WAIT holds none; LISTEN is expected).
open_server_sockets() { ss -Htan "( sport = :${PORT[soak]} )" | awk '$1 != "LISTEN" && $1 != "TIME-WAIT"' | wc -l; }

# lib.sh's cleanup calls this: the load loops, and the one summary line even when the script stops early.
cleanup_more() {
  stop_load
  ((SUMMARY_PRINTED)) || echo "soak: FAIL (${DIED:-stopped early; see the messages above})"
}

# In the background until LOAD_DEADLINE, one client run after another (run_client, so TERM and Ctrl-C's INT stop the
# client too), a line each in <dir>/<name>.log: wrk's WRK_RESULT, or WRK_FAILED with its output in failures.txt; for
# a 64 MiB download "ABORT|SLOW exit=<curl's> http=<status> bytes=<got>" (an abort's intended end is curl's exit 28).
#   client_loop <dir> <name> wrk <path> [pipeline depth]     client_loop <dir> <name> abort|slow
client_loop() {
  local dir=$1 name=$2 kind=$3 path=${4:-} depth=${5:-1} out=$1/$2.out i remaining status http bytes cmd
  local script=(-s "$PERF_DIR/report.lua" "$BASE_URL$path")   # wrk's, or with pipelining:
  ((depth == 1)) || script=(-s "$PERF_DIR/pipeline.lua" "$BASE_URL$path" -- "$depth")
  trap 'stop_pid "${CLIENT_PID:-}"; exit 0' TERM INT
  for ((i = 0; i < MAX_ITERATIONS; i++)); do
    remaining=$((LOAD_DEADLINE - EPOCHSECONDS))
    case "$kind" in
      wrk) ((remaining >= WRK_MIN_RUN_S)) || break
           cmd=(wrk -t1 -c"${CONNECTIONS[$name]}" -d"$((remaining < WRK_RUN_S ? remaining : WRK_RUN_S))s" --timeout "$WRK_TIMEOUT" "${script[@]}") ;;
      abort) ((remaining > 0)) || break
           cmd=(curl --limit-rate "$ABORT_RATE" --max-time "${ABORT_AFTER_S[i % ${#ABORT_AFTER_S[@]}]}")
           ((i % 2 == 0)) || cmd+=(--range "$ABORT_RANGE_START-") ;;
      slow) ((remaining >= SLOW_START_S)) || break
           cmd=(curl --limit-rate "$SLOW_RATE" --max-time "$SLOW_MAX_TIME_S") ;;
    esac
    [[ $kind == wrk ]] || cmd+=(-s -o /dev/null -w '%{http_code} %{size_download}' "$BASE_URL/64MiB.bin")
    run_client "$out" "${cmd[@]}" && status=0 || status=$?
    if [[ $kind == wrk ]]; then
      ((status == 0)) && grep '^WRK_RESULT ' "$out" >>"$dir/$name.log" && continue
      echo "WRK_FAILED name=$name exit=$status" >>"$dir/$name.log"
      { echo "--- $name: ${cmd[*]} (exit $status)"; cat "$out"; } >>"$dir/failures.txt"
    else
      read -r http bytes <"$out" || true
      echo "${kind^^} exit=$status http=${http:-000} bytes=${bytes:-0}" >>"$dir/$name.log"
      ((status == 0)) || [[ $kind == abort && $status == "$CURL_TIMED_OUT" ]] && continue
    fi
    sleep "$RETRY_PAUSE_S"
  done
}

# start_load <dir> <seconds>: every loop, in the background, until now + seconds.
start_load() {
  local dir=$1 i
  LOAD_DEADLINE=$((EPOCHSECONDS + $2))
  mkdir -p "$dir"
  client_loop "$dir" plaintext wrk /plaintext & LOAD_PIDS+=($!)
  client_loop "$dir" pipelined wrk /plaintext "$PIPELINE_DEPTH" & LOAD_PIDS+=($!)
  client_loop "$dir" file-4KiB wrk /4KiB.bin & LOAD_PIDS+=($!)
  client_loop "$dir" file-1MiB wrk /1MiB.bin & LOAD_PIDS+=($!)
  for ((i = 0; i < ABORT_LOOPS; i++)); do client_loop "$dir" "abort-$i" abort & LOAD_PIDS+=($!); done
  for ((i = 0; i < SLOW_READERS; i++)); do client_loop "$dir" "slow-$i" slow & LOAD_PIDS+=($!); done
}

# Waits for the loops to end (a last slow download may run SLOW_MAX_TIME_S past the deadline) and stops any left;
# then lets a running server close every connection (DRAIN_TIMEOUT_S at most), plus SETTLE_S. False if it exited.
finish_load() {
  local limit=$((LOAD_DEADLINE + SLOW_MAX_TIME_S + STOP_TIMEOUT_S)) pid deadline
  for pid in "${LOAD_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((EPOCHSECONDS < limit)); do sleep 0.2; done
  done
  stop_load
  server_alive || return 1
  deadline=$((EPOCHSECONDS + DRAIN_TIMEOUT_S))
  while (($(open_server_sockets) > 0)) && ((EPOCHSECONDS < deadline)); do sleep 0.2; done
  sleep "$SETTLE_S"
}

# Waits, at most THREAD_SETTLE_TIMEOUT_S, until the thread pool has retired the workers the load added.
settle_threads() {
  local limit=$(($(field "${ROWS[0]}" 3) + THREAD_MARGIN)) deadline=$((EPOCHSECONDS + THREAD_SETTLE_TIMEOUT_S)) threads
  threads=$(proc_status Threads 2>/dev/null) && ((threads > limit)) || return 0   # exited: the end row will say
  log "$threads threads; waiting up to ${THREAD_SETTLE_TIMEOUT_S}s for the thread pool to retire idle workers"
  while ((EPOCHSECONDS < deadline)) && threads=$(proc_status Threads 2>/dev/null) && ((threads > limit)); do sleep 1; done
}

# Sums client logs: "requests client_errors aborted abort_other". Requests: wrk's responses and every download
# started; errors: wrk's socket errors and non-2xx/3xx, failed wrk runs and slow downloads; aborted: ended as intended
# (curl's exit 28, or complete); abort_other: otherwise (no error: a client that walks away may see anything).
tally() {
  { cat "$@" 2>/dev/null || true; } | awk -v slow_bytes="${FILE_SIZE[64MiB]}" -v timed_out="$CURL_TIMED_OUT" '
    { delete f; for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
    $1 == "WRK_RESULT" { requests += f["requests"]; errors += f["connect"] + f["read"] + f["write"] + f["status"] + f["timeout"] }
    $1 == "WRK_FAILED" { errors++ }
    $1 == "ABORT" { requests++; if (f["exit"] == timed_out || f["exit"] == 0) aborted++; else other++ }
    $1 == "SLOW" { requests++; if (f["exit"] != 0 || f["http"] != 200 || f["bytes"] != slow_bytes) errors++ }
    END { printf "%d %d %d %d\n", requests, errors, aborted, other }'
}

# One line per kind of client: what each did over the soak, so a load that silently did nothing shows.
load_breakdown() {
  local kind files requests errors aborted other
  for kind in plaintext pipelined file-4KiB file-1MiB abort slow; do
    files=("$1/$kind"*.log)
    [[ -e ${files[0]} ]] || { echo "$kind: no runs"; continue; }
    read -r requests errors aborted other <<<"$(tally "${files[@]}")"
    case "$kind" in
      abort) echo "$kind: $requests downloads, $aborted aborted as intended, $other ended otherwise" ;;
      slow) echo "$kind: $requests downloads, $errors failed" ;;
      *) echo "$kind: $requests requests, $errors errors" ;;
    esac
  done | paste -sd ';' | sed 's/;/; /g'
}

# sample <label> <results dir>: a table row from the server's /proc entry, the client logs so far and its log:
#   label elapsed_s fds threads rss_kib requests client_errors log_fail log_crit log_warn aborted abort_other
sample() {
  local fds=- threads=- rss=- requests errors aborted other
  if server_alive; then
    fds=$(find "/proc/${SERVER_PID[soak]}/fd" -mindepth 1 -maxdepth 1 | wc -l) threads=$(proc_status Threads) rss=$(proc_status VmRSS)
  fi
  read -r requests errors aborted other <<<"$(tally "$2"/*.log)"
  ROWS+=("$1 $((EPOCHSECONDS - SOAK_STARTED)) $fds $threads $rss $requests $errors $(log_count fail) $(log_count crit) $(log_count warn) $aborted $other")
}

# Records how the server ended (it has exited): "exit status N", and when.
note_server_exit() {
  local status=0
  wait "${SERVER_PID[soak]}" || status=$?
  SERVER_EXIT="exit status $status, $1"; log "the server exited $1 (exit status $status)"
}

# MINUTES of load with a row each minute (until the server exits, if it does), then the drain.
run_minutes() {
  local minute
  log "soak: $MINUTES min of load; a sample every ${SAMPLE_INTERVAL_S}s"
  SOAK_STARTED=$EPOCHSECONDS
  start_load "$TMP_DIR/soak" $((MINUTES * SAMPLE_INTERVAL_S))
  for ((minute = 1; minute <= MINUTES; minute++)); do
    while ((EPOCHSECONDS < SOAK_STARTED + minute * SAMPLE_INTERVAL_S)) && server_alive; do sleep 1; done
    server_alive || { note_server_exit "during minute $minute"; stop_load; return 0; }
    sample "min-$minute" "$TMP_DIR/soak"
    log "minute $minute: $(field "${ROWS[-1]}" 6) client errors, $(($(field "${ROWS[-1]}" 7) + $(field "${ROWS[-1]}" 8))) log errors so far"
  done
  log "load ends; waiting for the clients, then for connections to drain"
  if finish_load; then settle_threads; else note_server_exit "as the load ended"; fi
}

# PASS or FAIL from ROWS (the baseline, the minutes of load, the drained end); sets SUMMARY, the one summary line.
judge() {
  local -a b e
  read -ra b <<<"${ROWS[0]}"
  read -ra e <<<"${ROWS[-1]}"
  local minutes=("${ROWS[@]:1:${#ROWS[@]}-2}") first second growth verdict=PASS reasons=""
  ((e[6] == 0)) || FAIL_REASONS+=("${e[6]} client errors")
  ((e[7] + e[8] == 0)) || FAIL_REASONS+=("$((e[7] + e[8])) server log errors (fail/crit)")
  TOTAL_ERRORS=$((TOTAL_ERRORS + e[6] + e[7] + e[8]))
  if [[ -n $SERVER_EXIT ]]; then
    FAIL_REASONS+=("the server exited: $SERVER_EXIT")
    TOTAL_ERRORS=$((TOTAL_ERRORS + 1)) FDS="${b[2]}->exited" THREADS="${b[3]}->exited" RSS="$(mib "${b[4]}")->exited"
  else
    FDS="${b[2]}->${e[2]}" THREADS="${b[3]}->${e[3]}"
    ((e[2] - b[2] <= FD_MARGIN)) || FAIL_REASONS+=("fds grew by $((e[2] - b[2])) (limit $FD_MARGIN; $(open_server_sockets) server sockets still open)")
    ((e[3] - b[3] <= THREAD_MARGIN)) || FAIL_REASONS+=("threads grew by $((e[3] - b[3])) (limit $THREAD_MARGIN)")
    if ((${#minutes[@]} < 2)); then
      RSS="$(mib "${b[4]}")->$(mib "${e[4]}") MiB (not judged: fewer than 2 minutes)"
    else   # the mean RSS of the minutes' second half against their first half's, and any growth over the limit
      read -r first second growth < <(printf '%s\n' "${minutes[@]}" | awk -v h=$((${#minutes[@]} / 2)) -v limit="$RSS_GROWTH_LIMIT_MIB" '
        { rss[NR] = $5 }
        END { for (i = 1; i <= h; i++) { a += rss[i]; b += rss[NR - h + i] }; a = sprintf("%.1f", a / h / 1024); b = sprintf("%.1f", b / h / 1024)
              printf "%s %s %s\n", a, b, (b - a > limit ? sprintf("%.1f", b - a) : "") }')
      RSS="$first->$second MiB"
      [[ -z $growth ]] || FAIL_REASONS+=("RSS grew by $growth MiB from the first half of the minutes to the second (limit $RSS_GROWTH_LIMIT_MIB)")
    fi
  fi
  ((${#FAIL_REASONS[@]} == 0)) || verdict=FAIL reasons=" ($(printf '%s; ' "${FAIL_REASONS[@]}" | sed 's/; $//'))"
  SUMMARY="soak: $verdict$reasons $MINUTES min, ${e[5]} requests, $TOTAL_ERRORS errors, fds $FDS, threads $THREADS, rss $RSS"
}

write_result_file() {
  cat <<EOF
# Soak test: $MINUTES minutes of mixed load on SpliceTransport

- Date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $BUILD_COMMIT (\`src/\` as of $SRC_COMMIT); kernel $(uname -sr); .NET SDK $(dotnet --version)
- Command: \`perf/soak.sh --minutes $MINUTES\`; server: \`$SERVER_COMMAND\`
- Load, at once, clients on core $CLIENT_CORE: wrk /plaintext (${CONNECTIONS[plaintext]} conns), pipelined /plaintext (${CONNECTIONS[pipelined]} conns × $PIPELINE_DEPTH), 4 KiB file (${CONNECTIONS[file-4KiB]} conns), 1 MiB file (${CONNECTIONS[file-1MiB]} conns), in $WRK_RUN_S s runs; $ABORT_LOOPS loops aborting 64 MiB downloads after ${ABORT_AFTER_S[*]} s; $SLOW_READERS slow readers of the 64 MiB file at $SLOW_RATE/s. Warm-up $WARMUP_S s of the same load.
- Thresholds: fds after drain ≤ baseline + $FD_MARGIN; threads ≤ baseline + $THREAD_MARGIN; mean RSS of the second half of the minutes ≤ first half + $RSS_GROWTH_LIMIT_MIB MiB; no error of any kind.

Rows: \`start\` after warm-up and drain (the baseline), one per minute of load, \`end\` after the load stopped and connections drained. Requests and errors are cumulative over the soak (the start row: warm-up); wrk's counts arrive when each $WRK_RUN_S s run ends.

| sample | s | fds | threads | RSS MiB | requests | client errors | log fail | log crit | log warn | aborted downloads (other endings) |
|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}" | awk '{ if ($5 != "-") $5 = sprintf("%.1f", $5 / 1024)
  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }')

Clients over the soak: $(load_breakdown "$TMP_DIR/soak").

\`$SUMMARY\`
EOF
}

# evidence <title> <pipeline>: the pipeline's first EVIDENCE_LINES lines under the title, if it prints any.
evidence() {
  local out
  out=$(eval "$2" 2>/dev/null | head -n "$EVIDENCE_LINES" || true)
  [[ -z $out ]] || printf '%s\n%s\n' "$1" "$out"
}

main() {
  begin_run soak                      # first: an argument error, too, ends with the one summary line
  parse_args "$@"
  BASE_URL=$(server_url soak)
  install_packages_for wrk=wrk curl=curl taskset=util-linux ss=iproute2
  ulimit -n "$(ulimit -Hn)"   # wrk and the server together hold a few hundred sockets; raise anyway
  build_sample
  make_files
  # The sample logs at Warning and above to the console: its log holds every warning and error ("warn:", "fail:", "crit:").
  SERVER_COMMAND=$(dotnet_server_command splice "${PORT[soak]}" "$GC_ENV")
  log "starting: $SERVER_COMMAND"
  start_server_process soak "$SERVER_COMMAND"
  wait_for_port soak
  check_server soak
  log "server pid ${SERVER_PID[soak]} answers correctly; warming up for ${WARMUP_S}s"
  # The same load for WARMUP_S, then the drain and the start row (the baseline, with the warm-up's counts).
  SOAK_STARTED=$EPOCHSECONDS
  start_load "$TMP_DIR/warmup" "$WARMUP_S"
  finish_load || note_server_exit "during warm-up"
  sample start "$TMP_DIR/warmup"
  [[ -n $SERVER_EXIT ]] || run_minutes
  sample end "$TMP_DIR/soak"          # after a fatal warm-up, an end row of nothing: the table keeps its usual ends
  # Warm-up errors count too: they are errors all the same.
  TOTAL_ERRORS=$(tally "$TMP_DIR"/warmup/*.log | awk '{print $2}')
  ((TOTAL_ERRORS == 0)) || FAIL_REASONS+=("$TOTAL_ERRORS client errors during warm-up")
  KEPT_LOG=$(keep_server_log soak 2>/dev/null)
  judge
  write_result_file | tee "$RESULTS_DIR/soak.md" | sed '$d'
  local log=$TMP_DIR/soak.log
  evidence "First server log errors (whole log in $KEPT_LOG):" "grep -E -A4 '^(fail|crit): ' $log"
  evidence "Server warnings, by kind:" "grep -A1 '^warn: ' $log | grep -v '^--\$' | paste - - | sort | uniq -c | sort -rn"
  evidence "Failed wrk runs:" "cat $TMP_DIR/{warmup,soak}/failures.txt"
  evidence "Failed slow downloads:" "cat $TMP_DIR/{warmup,soak}/slow-*.log | grep -v 'exit=0 http=200 bytes=${FILE_SIZE[64MiB]}\$'"
  echo "(server log: $KEPT_LOG; written to perf/results/soak.md)"
  echo "$SUMMARY"
  SUMMARY_PRINTED=1
  ((${#FAIL_REASONS[@]} == 0))
}

main "$@"
